"""The kind cluster as this package drives it: kind's CLI, commands inside its nodes (through
the container runtime), and kubectl with the cluster's own kubeconfig."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kind.settings import REPO_ROOT, Settings


class KindError(RuntimeError):
    """A step of bringing the kind cluster up, using it or taking it down failed."""


def build(script: str) -> Path:
    """Run one of the project's build scripts (cached builds); returns the last line it prints
    (the path or image it built). Its progress goes to stderr."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / script)],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise KindError(f"{script} failed (see its output above)")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class KindCluster:
    settings: Settings
    kind: Path  # the kind binary
    kubectl_bin: Path

    def run(
        self, *argv: str, input_bytes: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            list(argv),
            input=input_bytes,
            capture_output=True,
            env=self.settings.env(),
            check=False,
        )
        if check and result.returncode != 0:
            raise KindError(
                f"{' '.join(argv[:6])} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return result

    def kind_cmd(self, *args: str, check: bool = True) -> str:
        return self.run(str(self.kind), *args, check=check).stdout.decode()

    def runtime(self, *args: str, check: bool = True) -> str:
        return self.run(self.settings.runtime, *args, check=check).stdout.decode()

    def exists(self) -> bool:
        return self.settings.name in self.kind_cmd("get", "clusters", check=False).split()

    def nodes(self) -> list[str]:
        return sorted(self.kind_cmd("get", "nodes", "--name", self.settings.name).split())

    def exec(self, node: str, *argv: str, input_bytes: bytes | None = None) -> str:
        """Run a command inside a node's container."""
        interactive = ["-i"] if input_bytes is not None else []
        result = self.run(
            self.settings.runtime, "exec", *interactive, node, *argv, input_bytes=input_bytes
        )
        return result.stdout.decode()

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        data = input_text.encode() if input_text is not None else None
        argv = [str(self.kubectl_bin), "--kubeconfig", str(self.settings.kubeconfig), *args]
        return self.run(*argv, input_bytes=data).stdout.decode()

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json"))
        return parsed

    def workers(self) -> list[str]:
        return [n for n in self.nodes() if "control-plane" not in n]
