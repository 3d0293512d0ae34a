"""helm, built from the pinned Go module in tests/localcluster/go/helm (cached by
tests/charts/build-helm.sh, so fast after the first build)."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parent / "build-helm.sh"


def binary() -> str:
    """The path of the helm binary (built when missing)."""
    built = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True)
    return built.stdout.strip().splitlines()[-1]
