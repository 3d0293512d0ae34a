"""Chaos (issue 11): at least 100 job lifecycles on KWOK GPU nodes with worker failures, OOM
kills, divergence, manual rollbacks, suspends and resumes, and deletions injected from a seeded
schedule, while the real operator is SIGKILLed at random and 0-3 s after injected events, dies in
its crash hooks between two API calls, and the apiserver restarts once. Then, from the apiserver
and from watches that ran throughout: no job ever had pods of two attempts alive at once, no
attempt number was used twice, no job got stuck, every restart and rollback was counted exactly
once, and every job ended as its injected history implies.

TRAINKUBE_CHAOS_SEED replays a schedule (the seed is printed); TRAINKUBE_CHAOS_LIFECYCLES
changes how many lifecycles run (default 100); TRAINKUBE_CHAOS_CONCURRENCY how many at once.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import chaos
from tests.cluster.conftest import OperatorProcess
from tests.localcluster.cluster import LocalCluster
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.planner.escalate import escalate
from trainkube.planner.from_spec import request_for
from trainkube.planner.plan import plan

LIFECYCLES = int(os.environ.get("TRAINKUBE_CHAOS_LIFECYCLES", "100"))
CONCURRENCY = int(os.environ.get("TRAINKUBE_CHAOS_CONCURRENCY", "16"))
# The operator's crash hooks (TRAINKUBE_ENABLE_TEST_HOOKS), on in half of its incarnations:
# os._exit(137) right after a status write, after deleting an old attempt's Job, or after
# creating the new one. Status writes are frequent, so that point fires rarely.
CRASH_POINTS = "status-written=0.03,attempt-deleted=0.3,attempt-created=0.3"
HOOK_SHARE = 0.5
RANDOM_KILL_MEAN_S = 8.0
AIM_PROBABILITY = 0.25  # of injected events followed by a SIGKILL 0-3 s later
RUN_DEADLINE_S = max(420.0, LIFECYCLES * 5.0)
GC_WAIT_S = 300.0  # for a garbage collector that keeps up (see chaos.wait_for_garbage_collector)
# A manual rollback (trainkube.io/rollback-to) counts in status.recovery.rollbacks, and so
# against later divergences, but is carried out even when maxRollbacks are spent.
MANUAL_ROLLBACKS_LIMITED = False


def _escalations(manifest: dict[str, Any], most: int) -> int:
    """How many OOM kills in a row the planner has a smaller plan for (up to `most`)."""
    request = request_for(LLMTrainingJob.model_validate(manifest), lambda _: None)
    current = plan(request)
    for done in range(most):
        found = escalate(request, current)
        if found is None:
            return done
        current, overrides, _ = found
        request = replace(request, overrides=overrides)
    return most


def test_the_chaos_job_shapes_escalate_as_the_expectations_assume() -> None:
    """The chaos test's expectations assume: a roomy job has a smaller plan after each of its
    OOM kills (at most maxRestarts = 3 of them), a tight job has none after the first."""
    roomy = chaos.training_job("roomy", max_restarts=3, max_rollbacks=0, tight=False)
    tight = chaos.training_job("tight", max_restarts=3, max_rollbacks=0, tight=True)
    assert _escalations(roomy, 3) == 3
    assert _escalations(tight, 3) == 0


@pytest.fixture
def only_chaos_operator(
    operator: OperatorProcess, api_client: Any, namespace: str
) -> Iterator[None]:
    """The session's operator stands aside while the test runs its own (one operator acts at a
    time), and runs again afterwards for the tests after this one. First, a garbage collector
    that keeps up."""
    operator.stop()
    chaos.wait_for_garbage_collector(api_client, namespace, GC_WAIT_S)
    yield
    operator.start()


@pytest.mark.timeout(int(GC_WAIT_S + RUN_DEADLINE_S) + 300)
@pytest.mark.usefixtures("only_chaos_operator")
def test_chaos_lifecycles_with_operator_kills_and_an_apiserver_restart(
    api_client: Any, crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("TRAINKUBE_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed {seed} (replay with TRAINKUBE_CHAOS_SEED={seed})")
    seeds = random.Random(seed)
    # One generator per consumer: the scripts do not depend on timing, whatever the others draw.
    lifecycles = chaos.plan_lifecycles(
        random.Random(seeds.random()),
        LIFECYCLES,
        manual_rollbacks_limited=MANUAL_ROLLBACKS_LIMITED,
    )
    operator_rng, kill_rng, driver_rng = (random.Random(seeds.random()) for _ in range(3))
    started = time.monotonic()
    recorders = chaos.Recorders.start(api_client, namespace, ["LLMTrainingJob"], started)
    operator = chaos.ChaosOperator(
        crds,
        api_client,
        namespace,
        tmp_path / "operator.log",
        rng=operator_rng,
        crash_points=CRASH_POINTS,
        hook_share=HOOK_SHARE,
    )
    operator.start(hooks=False)
    supervisor = chaos.Supervisor(operator, kill_rng, random_kill_mean_s=RANDOM_KILL_MEAN_S)
    supervisor.start()
    driver = chaos.Driver(
        api_client,
        namespace,
        driver_rng,
        lifecycles,
        supervisor,
        concurrency=CONCURRENCY,
        aim_probability=AIM_PROBABILITY,
        apiserver_restart=lambda: chaos.restart_apiserver(crds),
    )
    try:
        driver.run(deadline_s=RUN_DEADLINE_S)
        supervisor.kills_enabled.clear()
        time.sleep(5)  # a few quiet seconds: late wrong actions show up now
        verdict = chaos.verify(api_client, namespace, lifecycles, recorders, driver)
    finally:
        supervisor.stop()
        operator.stop()
        recorders.stop()
    elapsed = time.monotonic() - started

    injected = ", ".join(f"{n} {step}" for step, n in sorted(driver.injected.items()))
    deaths = ", ".join(f"{n} {cause}" for cause, n in sorted(operator.deaths.items()))
    print(f"{len(lifecycles)} lifecycles in {elapsed:.0f} s, {CONCURRENCY} at a time")
    print(f"outcomes: {dict(sorted(verdict.outcomes.items()))}")
    print(f"injected: {injected}")
    hooks = ", ".join(f"{n} at {point}" for point, n in sorted(operator.fired_hooks().items()))
    print(
        f"operator: {operator.incarnations} incarnations; deaths: {deaths}; "
        f"{driver.aimed} kills aimed, {supervisor.skipped} dropped (operator just started); "
        f"crash hooks fired: {hooks or 'none'}"
    )
    settle = sorted(driver.settle_s)
    print(
        f"step -> implied state: {len(settle)} steps, median {settle[len(settle) // 2]:.1f} s, "
        f"p99 {settle[int(len(settle) * 0.99)]:.1f} s, max {settle[-1]:.1f} s "
        f"(bound {driver.settle_timeout:.0f} s)"
    )
    print(
        f"apiserver restarts: {len(driver.apiserver_down_s)} "
        f"({', '.join(f'{d:.1f} s down' for d in driver.apiserver_down_s)}); "
        f"watch breaks {sum(w.breaks for w in recorders.watchers)}, relists "
        f"{sum(w.relists for w in recorders.watchers)}; children created after their job "
        f"was deleted: {verdict.children_after_deletion}"
    )
    for invariant in chaos.INVARIANTS:
        print(f"jobs with {invariant}: {verdict.jobs(invariant)}")

    failing = verdict.failing_jobs()
    report = tmp_path / "chaos-report.txt"
    report.write_text(chaos.describe(lifecycles, verdict, recorders, limit=len(lifecycles)))
    assert not failing, (
        f"seed {seed}: {len(failing)} jobs broke an invariant (all of them: {report}; the "
        f"operator's log: {operator.log})\n{chaos.describe(lifecycles, verdict, recorders)}\n\n"
        f"operator log, last lines:\n{operator.tail()}"
    )
    assert len(driver.apiserver_down_s) == 1
    assert sum(operator.deaths.values()) >= 10, "too few operator deaths to mean anything"
