"""In-process rollbacks, pure parts: the one rule that picks a rollback's checkpoint and skipped
batches (the operator's restarts and the trainer's in-place rollbacks both use it), and how the
operator records the rollbacks a trainer reports: each once in status.rollbacks and against
maxRollbacks, however often it reads the same report."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_controller import PLAN, _batch_job, _observed, _pod
from tests.unit.test_recovery import _failed, _running
from trainkube.api.recovery import Rollback, rollback_target, skipped_batches
from trainkube.api.status import JobStatus
from trainkube.controller.status import derive


@pytest.mark.parametrize(
    ("valid", "diverged_at", "steps_back", "expected"),
    [
        ([10, 20, 30, 40], 46, 10, 30),  # 40 is too close to the spike
        ([10, 20, 30, 40], 50, 10, 40),  # exactly steps_back before it
        ([10, 20, 30, 40], 46, 0, 40),  # the newest
        ([10, 20, 30, 40], 12, 10, None),  # none early enough: start over
        ([], 46, 10, None),
        ([30, 10, 20], 46, 10, 30),  # order does not matter
    ],
)
def test_the_rollback_target_is_the_newest_valid_checkpoint_steps_back_before_the_spike(
    valid: list[int], diverged_at: int, steps_back: int, expected: int | None
) -> None:
    assert rollback_target(valid, diverged_at=diverged_at, steps_back=steps_back) == expected


def test_a_rollback_skips_the_batches_after_its_checkpoint() -> None:
    assert skipped_batches(33, 5) == (33, 38)
    assert skipped_batches(33, 0) is None


def _reported(*numbers: int) -> dict[str, Any]:
    """The report of attempt 1 whose trainer rolled back in place `numbers` times."""
    rollbacks = [
        {
            "number": n,
            "detectedAtStep": 46 + 10 * n,
            "loss": 9.5,
            "rule": "spike: loss 9.5 > mean 2 + 6 sigma",
            "fromCheckpointStep": 30 + 10 * n,
            "learningRate": 3e-3 * 0.5**n,
            "learningRateFactor": 0.5**n,
            "skippedBatches": 5,
            "skipped": [30 + 10 * n, 35 + 10 * n],
            "time": "2026-01-01T00:00:00Z",
        }
        for n in numbers
    ]
    progress = {"attempt": 1, "step": 40, "stepSeconds": 1.0, "rollbacks": rollbacks}
    return {"progress.json": progress}


def _seen(report: dict[str, Any]) -> Any:
    return _observed(
        attempt_job=_batch_job(),
        pods=[_pod(0, "Running"), _pod(1, "Running")],
        report=report,
        rollback_policy=Rollback(steps_back=10, lr_factor=0.5, skip_batches=5, max_rollbacks=3),
        base_lr=3e-3,
    )


def test_an_in_process_rollback_is_recorded_once_however_often_its_report_is_read() -> None:
    running = _running()
    first = derive(running, observed=_seen(_reported(1)), plan=PLAN)
    status = first.status
    [record] = status.rollbacks
    assert (record.detected_at_step, record.from_checkpoint_step) == (56, 40)
    assert record.in_process
    assert record.attempt == 1
    assert status.recovery is not None
    assert status.recovery.rollbacks == 1
    assert status.recovery.restarts == 0
    assert status.recovery.learning_rate_factor == 0.5
    assert [(r.start, r.end) for r in status.recovery.skip_batches] == [(40, 45)]
    assert status.attempts[-1].in_process_rollbacks == 1
    assert [a.number for a in status.attempts] == [1]  # no pod restarted
    assert first.create_attempt is None
    assert [e[1] for e in first.events] == ["RolledBackInProcess"]
    assert status.goodput is not None
    # Goodput counts steps 41-56, trained again after the rollback, at 1 s a step.
    assert status.goodput.lost.recomputation == 16
    rolling = next(c for c in status.conditions if c.type == "RollingBack")
    assert (rolling.status, rolling.reason) == ("False", "RolledBackInProcess")
    # The same report again (the next reconcile, or a restarted operator reading the status
    # it wrote): nothing is added.
    again = derive(status, observed=_seen(_reported(1)), plan=PLAN)
    assert len(again.status.rollbacks) == 1
    assert again.status.recovery is not None
    assert again.status.recovery.rollbacks == 1
    assert again.events == []
    # A second rollback in the same attempt adds only itself.
    second = derive(status, observed=_seen(_reported(1, 2)), plan=PLAN)
    assert [r.detected_at_step for r in second.status.rollbacks] == [56, 66]
    assert second.status.recovery is not None
    assert second.status.recovery.rollbacks == 2
    assert second.status.attempts[-1].in_process_rollbacks == 2


def test_a_status_write_that_was_lost_records_the_rollback_on_the_next_reconcile() -> None:
    running = _running()
    derive(running, observed=_seen(_reported(1)), plan=PLAN)  # decided, never written
    retried = derive(running, observed=_seen(_reported(1)), plan=PLAN)
    assert len(retried.status.rollbacks) == 1
    assert retried.status.recovery is not None
    assert retried.status.recovery.rollbacks == 1


def test_a_divergence_exit_after_in_process_rollbacks_counts_them_against_the_budget() -> None:
    """The trainer rolled back in place once (maxRollbacks 1), then diverged again and exited:
    the operator sees the budget used and fails the job instead of restarting the pods."""
    divergence = {"step": 56, "loss": 9.5, "rule": "nan"}
    failed = _failed(
        10,
        divergence=divergence,
        rollback=Rollback(steps_back=10, lr_factor=0.5, max_rollbacks=1),
        report=_reported(1),
    )
    decision = derive(_running(), observed=failed, plan=PLAN)
    ended = next(c for c in decision.status.conditions if c.type == "Failed")
    assert ended.reason == "RollbacksExhausted"
    assert "after 1 rollbacks; maxRollbacks is 1" in ended.message
    assert [r.in_process for r in decision.status.rollbacks] == [True]


def test_a_pod_restart_rollback_is_recorded_as_not_in_process() -> None:
    divergence = {"step": 46, "loss": 9.5, "rule": "nan"}
    status: JobStatus = _running()
    decision = derive(status, observed=_failed(10, divergence=divergence), plan=PLAN)
    [record] = decision.status.rollbacks
    assert not record.in_process
    assert record.attempt == 1
    assert decision.create_attempt == 2
