"""The exit codes are one definition that the trainer exits with and the operator reads."""

from __future__ import annotations

import subprocess
import sys

from trainkube.exitcodes import ExitCode


def test_exit_codes_are_the_documented_contract() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "SUCCESS": 0,
        "FAILED": 1,
        "INVALID_CONFIG": 2,
        "DIVERGED": 10,
        "OUT_OF_MEMORY": 11,
        "GATES_FAILED": 12,
    }


def test_importing_the_exit_codes_loads_no_third_party_package() -> None:
    # Both images import it; it must not drag in pydantic, the kubernetes client, kopf or torch.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, trainkube.exitcodes; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"pydantic", "kubernetes", "kopf", "torch", "yaml"} & {m.split(".")[0] for m in loaded}
    assert heavy == set()
