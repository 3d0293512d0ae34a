"""Intent before action (pure): an attempt is recorded in status before its Job exists, so a
reconcile that died half-way is finished, never repeated or forgotten; a Job that vanishes
after it was seen ends its attempt exactly once; status lists stay bounded."""

from __future__ import annotations

from tests.unit.test_controller import JOB, PLAN, _batch_job, _observed, _pod
from trainkube.api.recovery import FailurePolicy
from trainkube.api.status import MAX_ATTEMPTS, Attempt, JobStatus
from trainkube.controller.status import derive


def _intended() -> JobStatus:
    """Attempt 1 recorded in status; its Job not created (the operator died, say)."""
    decision = derive(JOB.status, observed=_observed(), plan=PLAN)
    assert decision.create_attempt == 1
    return decision.status


def test_an_attempt_recorded_but_not_created_is_created_with_the_same_number() -> None:
    again = derive(_intended(), observed=_observed(), plan=PLAN)
    assert again.create_attempt == 1
    assert [a.number for a in again.status.attempts] == [1]


def test_the_attempts_job_is_adopted_by_uid_once_seen() -> None:
    seen = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    decision = derive(_intended(), observed=seen, plan=PLAN)
    assert decision.create_attempt is None
    assert decision.delete_attempts == []
    assert decision.status.attempts[-1].job_uid == "job-uid-1"


def test_a_job_deleted_after_it_was_seen_fails_the_attempt_once_and_restarts() -> None:
    seen = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    running = derive(_intended(), observed=seen, plan=PLAN).status
    policy = FailurePolicy(max_restarts=3, backoff_seconds=0)
    lost = derive(running, observed=_observed(failure_policy=policy), plan=PLAN)
    first, second = lost.status.attempts
    assert (first.number, first.reason) == (1, "AttemptDeleted")
    assert second.number == 2
    assert second.end_time is None
    assert lost.create_attempt == 2
    assert lost.status.recovery is not None
    assert lost.status.recovery.restarts == 1
    # The next reconcile, before attempt 2's Job appears, counts nothing again.
    again = derive(lost.status, observed=_observed(failure_policy=policy), plan=PLAN)
    assert again.create_attempt == 2
    assert again.status.recovery is not None
    assert again.status.recovery.restarts == 1
    assert [a.number for a in again.status.attempts] == [1, 2]


def test_a_new_attempt_asks_for_every_older_attempt_job_to_be_deleted() -> None:
    seen = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    running = derive(_intended(), observed=seen, plan=PLAN).status
    failed = _observed(
        attempt_job=_batch_job("Failed"),
        pods=[_pod(0, "Running"), _pod(1, "Failed", code=1)],
        existing_attempts=(1,),
        failure_policy=FailurePolicy(max_restarts=3, backoff_seconds=0),
    )
    decision = derive(running, observed=failed, plan=PLAN)
    assert decision.create_attempt == 2
    assert decision.delete_attempts == [1]


def test_status_keeps_the_last_attempts_and_numbers_go_on() -> None:
    many = [
        Attempt(number=n, start_time="2026-01-01T00:00:00Z", end_time="2026-01-01T00:00:01Z")
        for n in range(1, 31)
    ]
    status = JOB.status.model_copy(update={"attempts": many[-MAX_ATTEMPTS:]})
    decision = derive(status, observed=_observed(), plan=PLAN)
    assert decision.create_attempt == 31
    assert len(decision.status.attempts) == MAX_ATTEMPTS
    assert decision.status.attempts[-1].number == 31


def test_a_finished_job_gets_no_attempt_whatever_is_deleted_under_it() -> None:
    seen = _observed(attempt_job=_batch_job("Complete"), pods=[_pod(0, "Succeeded")])
    done = derive(_intended(), observed=seen, plan=PLAN).status
    assert done.phase == "Succeeded"
    after = derive(done, observed=_observed(), plan=PLAN)  # its Job and pods gone
    assert after.create_attempt is None
    assert after.status.attempts == done.attempts


def test_every_index_succeeded_completes_the_job_before_the_batch_job_says_so() -> None:
    done = _observed(
        attempt_job=_batch_job(), pods=[_pod(0, "Succeeded", code=0), _pod(1, "Succeeded", code=0)]
    )
    decision = derive(_intended(), observed=done, plan=PLAN)
    assert decision.status.phase == "Succeeded"
    assert decision.status.attempts[-1].reason == "Completed"


def test_suspend_deletes_attempts_that_left_only_pods_and_says_when_workers_stopped() -> None:
    running = derive(
        _intended(),
        observed=_observed(attempt_job=_batch_job(), pods=[_pod(0, "Running")]),
        plan=PLAN,
    ).status
    # Attempt 1's Job is gone already, its two pods are not (the garbage collector lags).
    stopping = derive(
        running, observed=_observed(suspend=True, existing_attempts=(1,), pods_alive=2), plan=PLAN
    )
    assert stopping.delete_attempts == [1]
    suspended = next(c for c in stopping.status.conditions if c.type == "Suspended")
    assert suspended.message == "suspended: stopping 2 workers"
    stopped = derive(stopping.status, observed=_observed(suspend=True), plan=PLAN)
    suspended = next(c for c in stopped.status.conditions if c.type == "Suspended")
    assert suspended.message == "suspended: workers stopped"
    assert stopped.events == []  # the same reason: no second Event
