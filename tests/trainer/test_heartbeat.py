"""Rank 0's heartbeat: the report goes out between steps too, carrying the last step and when
it ended, which is what the operator's hang detection reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trainkube import hangrule, timestamps
from trainkube_trainer.reporting import Reporter


def _written(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def test_the_heartbeat_sends_the_last_step_while_no_step_ends(tmp_path: Path) -> None:
    reporter = Reporter(tmp_path, enabled=True, min_interval=3600)
    reporter.progress(force=True, step=0, phase="training")
    reporter.stepped(3, 0.5)
    reporter.phase("checkpointing")
    stop = reporter.start_heartbeat(0.1)
    try:
        deadline = time.monotonic() + 10
        while "heartbeat" not in _written(tmp_path / "progress.json"):
            assert time.monotonic() < deadline, "no heartbeat in 10 s"
            time.sleep(0.05)
    finally:
        stop.set()
    sent = _written(tmp_path / "progress.json")
    assert sent["lastStep"] == 3
    assert sent["stepSeconds"] == 0.5
    assert sent["phase"] == "checkpointing"
    assert str(sent["lastStepAt"]).endswith("Z")


def test_the_mean_step_time_follows_recent_steps() -> None:
    reporter = Reporter(Path("/nonexistent"), enabled=True, min_interval=3600)
    reporter.stepped(1, 1.0)
    reporter.stepped(2, 2.0)
    assert reporter.state["stepSeconds"] == 1.1


def test_a_stall_past_the_hang_timeout_is_reported_before_the_next_heartbeat(
    tmp_path: Path,
) -> None:
    """With a 2 s hangTimeoutSeconds and a 120 s heartbeat, the report that proves the stall
    (sent at least 2 s after the last step, by the trainer's own clock) still goes out."""
    reporter = Reporter(tmp_path, enabled=True, min_interval=3600, hang_timeout=2)
    reporter.progress(force=True, step=0, phase="training")
    reporter.stepped(3, 0.5)
    stop = reporter.start_heartbeat(120)
    try:
        deadline = time.monotonic() + 30  # a quarter of the heartbeat
        while "heartbeat" not in _written(tmp_path / "progress.json"):
            assert time.monotonic() < deadline, "no stall report in 30 s"
            time.sleep(0.1)
    finally:
        stop.set()
    sent = _written(tmp_path / "progress.json")
    assert sent["lastStep"] == 3
    stalled = timestamps.epoch(str(sent["sentAt"])) - timestamps.epoch(str(sent["lastStepAt"]))
    assert stalled > hangrule.allowed_seconds(sent, 2) == 2
