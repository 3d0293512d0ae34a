"""Secret values the trainer reads stay out of what it writes: its stdout and stderr (a
traceback included) in a real Python process, its report documents and result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainkube_trainer import secrets
from trainkube_trainer.reporting import Reporter

VALUE = "hf_s3cr3t-value-under-test"

SCRIPT = """
import sys, warnings
from trainkube_trainer import secrets
secrets.install()
value = secrets.read(sys.argv[1])
print("token:", value)
warnings.warn(f"retrying with {value}")
raise RuntimeError(f"401 Unauthorized for token {value}")
"""


def test_a_process_that_read_a_secret_never_prints_it_not_even_in_a_traceback(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text(VALUE + "\n")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(secret)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 1  # the RuntimeError ended it
    assert VALUE not in run.stdout + run.stderr
    assert "token: [redacted]" in run.stdout
    assert "retrying with [redacted]" in run.stderr
    assert "RuntimeError: 401 Unauthorized for token [redacted]" in run.stderr


def test_a_result_whose_error_holds_a_secret_is_written_redacted(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(VALUE)
    secrets.read(secret)
    reporter = Reporter(tmp_path / "report", enabled=True, min_interval=0)
    reporter.progress(step=1, loss=2.0)
    reporter.result(outcome="failed", exit_code=1, error=f"wandb: invalid key {VALUE}")
    written = (tmp_path / "report" / "result.json").read_text()
    assert VALUE not in written
    assert json.loads(written)["error"] == "wandb: invalid key [redacted]"


def test_short_values_are_not_redacted_so_ordinary_words_survive() -> None:
    secrets.remember("x")
    assert secrets.redact("x marks the spot") == "x marks the spot"
