"""Exact lineage (pure): a rollback attempt records the step it went back to and tells its
trainer to move the later checkpoints aside; a restart after it does neither; abandoned
checkpoints show in status as not valid, with why."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_controller import PLAN
from tests.unit.test_recovery import LATER, _failed, _running, _with_checkpoints
from trainkube.api.status import CheckpointRecord
from trainkube.controller import report
from trainkube.controller.status import derive


def test_a_rollback_attempt_records_its_target_and_a_later_restart_does_not() -> None:
    divergence = {"step": 46, "loss": 9.5, "rule": "nan"}
    rolled = derive(
        _with_checkpoints(_running()), observed=_failed(10, divergence=divergence), plan=PLAN
    )
    assert rolled.status.attempts[-1].rollback_to == 30
    # Attempt 2 then fails for an ordinary reason: attempt 3 is a restart, not a rollback.
    failed_again = derive(rolled.status, observed=replace(_failed(1), now=LATER), plan=PLAN)
    restarted = derive(
        failed_again.status,
        observed=replace(_failed(1), now="2026-01-01T01:00:00Z", attempt_job=None, pods=[]),
        plan=PLAN,
    )
    numbers = [a.number for a in restarted.status.attempts]
    assert numbers[-1] == 3
    assert restarted.status.attempts[-1].rollback_to is None


def test_abandoned_checkpoints_stay_in_status_as_not_valid_with_why() -> None:
    known = [CheckpointRecord(step=s) for s in (10, 20, 30, 40)]
    events = [
        {
            "type": "checkpointsAbandoned",
            "steps": [40],
            "reason": "attempt 2 rolled back to step 30",
        },
        {"type": "checkpoint", "step": 50, "kept": [30, 50], "seconds": 0.4},
    ]
    found = report.checkpoints({"progress.json": {"events": events}}, known)
    by_step = {c.step: c for c in found}
    assert sorted(by_step) == [30, 40, 50]  # retention dropped 10 and 20, not the abandoned 40
    assert by_step[40].valid is False
    assert by_step[40].invalid_reason == "abandoned: attempt 2 rolled back to step 30"
    assert by_step[50].valid is True
    assert by_step[50].seconds == 0.4
