"""Which derived statuses get a write of their own (pure): not an adoption of the attempt's
batch Job by uid alone, nor goodput alone; anything else, and both with it."""

from __future__ import annotations

from tests.unit.test_controller import JOB, PLAN, _batch_job, _observed, _pod
from trainkube.api.status import Goodput, JobStatus, LostTime
from trainkube.controller.status import derive
from trainkube.controller.statuswrite import worth_writing


def _intended() -> JobStatus:
    decision = derive(JOB.status, observed=_observed(), plan=PLAN)
    assert decision.create_attempt == 1
    return decision.status


def test_a_new_jobs_first_status_is_written() -> None:
    assert worth_writing(JOB.status, _intended())


def test_adopting_the_attempts_job_before_any_worker_runs_is_not_written_by_itself() -> None:
    intended = _intended()
    seen = derive(intended, observed=_observed(attempt_job=_batch_job()), plan=PLAN).status
    assert seen.attempts[-1].job_uid == "job-uid-1"
    assert not worth_writing(intended, seen)
    pending = [_pod(0, "Pending"), _pod(1, "Pending")]
    later = derive(intended, observed=_observed(attempt_job=_batch_job(), pods=pending), plan=PLAN)
    assert not worth_writing(intended, later.status)


def test_the_workers_running_is_written_and_carries_the_adopted_uid() -> None:
    intended = _intended()
    running = [_pod(0, "Running"), _pod(1, "Running")]
    seen = derive(intended, observed=_observed(attempt_job=_batch_job(), pods=running), plan=PLAN)
    assert worth_writing(intended, seen.status)
    assert seen.status.attempts[-1].job_uid == "job-uid-1"


def test_another_uid_than_the_one_written_is_written() -> None:
    intended = _intended()
    first = intended.attempts[-1].model_copy(update={"job_uid": "job-uid-0"})
    written = intended.model_copy(update={"attempts": [first]})
    seen = derive(written, observed=_observed(attempt_job=_batch_job()), plan=PLAN).status
    assert seen.attempts[-1].job_uid == "job-uid-1"
    assert worth_writing(written, seen)


def test_goodput_alone_is_not_written_but_goes_with_any_other_change() -> None:
    intended = _intended()
    lost = LostTime(
        scheduling=5, startup=0, checkpointing=0, recomputation=0, restarts=0, suspended=0
    )
    later = Goodput(ratio="0.0%", productive_seconds=0, wall_seconds=5, lost=lost)
    moved = intended.model_copy(update={"goodput": later})
    assert not worth_writing(intended, moved)
    assert worth_writing(intended, moved.model_copy(update={"observed_generation": 2}))
