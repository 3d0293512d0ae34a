"""Goodput accounting (pure): wall time since the first start split into productive time and
where the rest went, and an ETA from the mean step time."""

from __future__ import annotations

from trainkube.api.status import Attempt, CheckpointRecord, JobStatus, Progress
from trainkube.controller import goodput


def _t(seconds: int) -> str:
    return f"2026-01-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"


def test_a_run_with_a_restart_accounts_for_every_lost_second() -> None:
    status = JobStatus(
        start_time=_t(0),
        attempts=[
            # Scheduled in 20 s, started up in 30 s, trained to step 120, failed at 1000 s.
            Attempt(
                number=1,
                start_time=_t(0),
                workers_started=_t(20),
                first_step_time=_t(50),
                last_step=120,
                end_time=_t(1000),
            ),
            # 40 s of back-off, 10 s to schedule, 25 s to resume from step 100.
            Attempt(
                number=2,
                start_time=_t(1040),
                workers_started=_t(1050),
                first_step_time=_t(1075),
                resumed_from_step=100,
            ),
        ],
        checkpoints=[
            CheckpointRecord(step=50, seconds=4.0),
            CheckpointRecord(step=100, seconds=6.0),
        ],
        progress=Progress(step=150, total_steps=300),
        suspended_seconds=0,
    )
    found = goodput.compute(status, _t(2000), step_seconds=2.0)
    assert found is not None
    lost = found.lost
    assert (lost.scheduling, lost.startup, lost.restarts) == (30, 55, 40)
    assert lost.checkpointing == 10
    assert lost.recomputation == 40  # steps 100-120 again, 2 s each
    assert found.wall_seconds == 2000
    assert found.productive_seconds == 2000 - (30 + 55 + 40 + 10 + 40)
    assert found.ratio == "91.2%"
    assert found.eta == _t(2300)  # 150 steps left at 2 s


def test_a_finished_job_has_no_eta_and_stops_its_clock_at_completion() -> None:
    status = JobStatus(
        start_time=_t(0),
        completion_time=_t(100),
        attempts=[Attempt(number=1, start_time=_t(0), workers_started=_t(10), end_time=_t(100))],
        progress=Progress(step=300, total_steps=300),
    )
    found = goodput.compute(status, _t(5000), step_seconds=1.0)
    assert found is not None
    assert found.wall_seconds == 100
    assert found.eta is None


def test_a_job_that_never_started_has_no_goodput() -> None:
    assert goodput.compute(JobStatus(), _t(10), step_seconds=None) is None


def test_the_goodput_metric_is_read_from_each_jobs_status() -> None:
    from trainkube.controller.metrics import goodput_ratios  # noqa: PLC0415

    jobs = [
        {
            "kind": "LLMTrainingJob",
            "metadata": {"namespace": "ml", "name": "a"},
            "status": {"goodput": {"wallSeconds": 200, "productiveSeconds": 150}},
        },
        {"kind": "EvalJob", "metadata": {"namespace": "ml", "name": "b"}, "status": {}},
    ]
    assert [(body["metadata"]["name"], ratio) for body, ratio in goodput_ratios(jobs)] == [
        ("a", 0.75)
    ]
