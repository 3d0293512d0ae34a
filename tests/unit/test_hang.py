"""Hang detection (pure): the clock, the time allowed per phase, and the restart it leads to."""

from __future__ import annotations

from typing import Any

from tests.unit.test_controller import PLAN, _batch_job, _observed, _pod
from tests.unit.test_recovery import _running
from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.controller import hang
from trainkube.controller.status import derive
from trainkube.hangrule import allowed_seconds

STARTED = "2026-01-01T00:00:00Z"


def _worker(index: int) -> dict[str, Any]:
    pod = _pod(index, "Running")
    pod["status"]["containerStatuses"] = [{"state": {"running": {"startedAt": STARTED}}}]
    return pod


def _at(seconds: int) -> str:
    return f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z"


def test_the_derived_timeout_is_ten_steps_with_a_five_minute_floor() -> None:
    progress = {"lastStepAt": STARTED, "phase": "training"}
    assert allowed_seconds({**progress, "stepSeconds": 2.0}, None) == 300
    assert allowed_seconds({**progress, "stepSeconds": 90.0}, None) == 900
    assert allowed_seconds({**progress, "stepSeconds": 90.0}, 60) == 60  # the spec's value wins


def test_slow_phases_and_start_up_are_allowed_four_times_as_long() -> None:
    assert allowed_seconds({"lastStepAt": STARTED, "phase": "checkpointing"}, 20) == 80
    assert allowed_seconds({"lastStepAt": STARTED, "phase": "validating"}, 20) == 80
    assert allowed_seconds({}, 20) == 80  # no step yet: starting


def test_a_step_within_the_timeout_is_not_a_hang_and_says_when_to_look_again() -> None:
    progress = {"lastStep": 7, "lastStepAt": _at(30), "phase": "training"}
    verdict = hang.check(progress, [_worker(0)], _at(40), 20)
    assert verdict is not None
    assert not verdict.hung
    assert verdict.seconds_left == 20  # 20 s allowed, one 10-s heartbeat of lag, 10 s gone


def test_no_step_for_longer_than_the_timeout_is_a_hang_naming_the_last_step() -> None:
    progress = {"lastStep": 7, "lastStepAt": _at(30), "phase": "training"}
    verdict = hang.check(progress, [_worker(0)], _at(61), 20)
    assert verdict is not None
    assert verdict.hung
    assert "the last step (7) ended 31 s ago" in verdict.message


def test_a_report_sent_after_the_timeout_without_a_new_step_is_a_hang_at_once() -> None:
    # The heartbeat's report proves the stall by itself: no heartbeat of lag is waited for.
    progress = {"lastStep": 7, "lastStepAt": _at(30), "phase": "training", "sentAt": _at(51)}
    verdict = hang.check(progress, [_worker(0)], _at(52), 20)
    assert verdict is not None
    assert verdict.hung
    assert "the last step (7) ended 22 s ago" in verdict.message


def test_a_report_sent_within_the_timeout_waits_for_the_heartbeat_of_lag() -> None:
    progress = {"lastStep": 7, "lastStepAt": _at(30), "phase": "training", "sentAt": _at(45)}
    assert not hang.check(progress, [_worker(0)], _at(55), 20).hung  # type: ignore[union-attr]
    assert hang.check(progress, [_worker(0)], _at(61), 20).hung  # type: ignore[union-attr]


def test_the_clock_starts_when_the_last_worker_started_not_before() -> None:
    verdict = hang.check({}, [_worker(0)], _at(89), 20)  # 80 s allowed to start, +10 s lag
    assert verdict is not None
    assert not verdict.hung
    assert hang.check({}, [_pod(0, "Pending")], _at(500), 20) is None


def test_a_hung_attempt_ends_with_reason_hung_and_restarts() -> None:
    policy = FailurePolicy(max_restarts=2, backoff_seconds=0, hang_timeout_seconds=20)
    report = {"progress.json": {"lastStep": 3, "lastStepAt": _at(10), "phase": "training"}}
    observed = _observed(
        attempt_job=_batch_job(),
        pods=[_worker(0), _worker(1)],
        report=report,
        now=_at(45),
        failure_policy=policy,
        rollback_policy=Rollback(enabled=False),
    )
    decision = derive(_running(), observed=observed, plan=PLAN)
    ended = decision.status.attempts[0]
    assert ended.reason == "Hung"
    assert "no training step for 35 s" in (ended.message or "")
    assert decision.status.recovery is not None
    assert decision.status.recovery.restarts == 1
    assert 1 in decision.delete_attempts  # the hung workers go
