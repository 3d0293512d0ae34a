"""The checkpoint interval rule (pure): Young-Daly, the MTBF prior by node count and its
refinement by the job's own history, and the choice the trainer reports reaching status."""

from __future__ import annotations

import math

from trainkube.api.status import Attempt, JobStatus, RecoveryState
from trainkube.controller import interval, report
from trainkube_trainer.interval import Schedule, choose, young_daly_seconds


def test_young_daly_is_the_root_of_twice_save_time_times_mtbf() -> None:
    assert young_daly_seconds(30.0, 3600.0) == math.sqrt(2 * 30 * 3600)
    choice = choose(2.0, 30.0, 3600.0, measured=True)
    assert choice.steps == round(math.sqrt(2 * 30 * 3600) / 2.0)  # 465 s at 2 s a step
    assert "30.0 s save (measured) x 1.0 h MTBF" in choice.report()["reason"]


def test_a_fixed_interval_saves_on_its_multiples_and_at_the_end() -> None:
    fixed = Schedule(every=20, mtbf_seconds=None)
    assert [s for s in range(1, 51) if fixed.due(s, total=50)] == [20, 40, 50]


def test_auto_plans_after_the_probe_steps_and_saves_where_it_planned() -> None:
    auto = Schedule(every=500, mtbf_seconds=3600.0)
    assert not auto.needs_plan(4, started_at=0)
    assert auto.needs_plan(5, started_at=0)
    auto.adopt(5, auto.plan(5, step_seconds=1.0, save_seconds=None).steps)
    assert auto.next_save == 5 + round(math.sqrt(2 * 30 * 3600))
    assert not auto.due(6, total=10_000)
    assert auto.due(auto.next_save, total=10_000)


def test_the_mtbf_prior_divides_node_hours_by_nodes_unless_the_spec_gives_one() -> None:
    assert interval.prior_seconds(None, 64) == 5700 * 3600 / 64
    assert interval.prior_seconds(12.0, 64) == 12 * 3600


def test_the_jobs_failures_shorten_the_mtbf_and_its_running_time_lengthens_it() -> None:
    attempts = [
        Attempt(number=1, start_time="2026-01-01T00:00:00Z", end_time="2026-01-01T01:00:00Z"),
        Attempt(number=2, start_time="2026-01-01T01:00:00Z"),
    ]
    failed = JobStatus(attempts=attempts, recovery=RecoveryState(restarts=1, disruptions=1))
    # One pseudo-failure at the prior (10 h) plus 2 h of running, over 1 + 2 failures.
    assert interval.refined_seconds(36_000, failed, "2026-01-01T02:00:00Z") == 43_200 / 3
    clean = JobStatus(attempts=attempts[:1])
    assert interval.refined_seconds(36_000, clean, "2026-01-01T02:00:00Z") == 39_600


def test_the_reported_choice_reaches_status() -> None:
    reported = choose(1.0, 4.0, 7200.0, measured=True).report()
    found = report.interval({"progress.json": {"checkpointInterval": reported}})
    assert found is not None
    assert (found.steps, found.mtbf_hours) == (reported["steps"], 2.0)
