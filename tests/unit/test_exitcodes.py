"""The exit codes are one definition that the trainer exits with and the operator reads; the
trainer ends with its code whatever the interpreter's teardown would do."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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


# A process whose interpreter teardown aborts, as a collective backend's native threads can:
# an object collected in the teardown calls abort(). It registers an exit handler that writes a
# file, then ends with `ending` and the code given as argv[1].
_ABORTS_IN_TEARDOWN = """
import atexit, os, sys
from pathlib import Path
from trainkube_trainer.exitcodes import exit_now


class AbortsWhenCollected:
    def __del__(self):
        os.abort()


kept = AbortsWhenCollected()
atexit.register(lambda: Path(sys.argv[2]).write_text("ran"))
{ending}(int(sys.argv[1]))
"""


def _ended_with(ending: str, code: int, marker: str) -> int:
    script = _ABORTS_IN_TEARDOWN.format(ending=ending)
    return subprocess.run(
        [sys.executable, "-c", script, str(code), marker], capture_output=True, check=False
    ).returncode


def test_exit_now_keeps_the_decided_code_when_the_teardown_would_abort(tmp_path: Path) -> None:
    # The hazard is real in this process: sys.exit's teardown aborts it (SIGABRT).
    assert _ended_with("sys.exit", 0, str(tmp_path / "control")) == -signal.SIGABRT
    for code in (ExitCode.SUCCESS, ExitCode.GATES_FAILED):
        marker = tmp_path / f"exit-handlers-{code.value}"
        assert _ended_with("exit_now", code.value, str(marker)) == code.value
        assert marker.read_text() == "ran"  # the exit handlers ran before the end
