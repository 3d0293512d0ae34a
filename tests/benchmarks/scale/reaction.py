"""With all jobs running: the operator's requests while nothing changes, and how fast one
worker finishing reaches its job's status."""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Any

import numpy as np

from tests.benchmarks.scale.bench import Bench
from tests.benchmarks.scale.counting import operator_requests
from tests.benchmarks.scale.watch import Collection, Watched, now
from tests.localcluster import nodes


def _settle(bench: Bench, watched: list[Collection]) -> float:
    """Wait until no watched collection has had an event for --settle-seconds (at most the
    cap); the seconds waited."""
    started = now()
    while now() - started < bench.args.cap_seconds:
        quiet = now() - max(c.last_event for c in watched)
        if quiet >= bench.args.settle_seconds:
            break
        time.sleep(bench.args.settle_seconds - quiet)
    return round(now() - started, 1)


def measure_idle(bench: Bench, watched: list[Collection]) -> dict[str, Any]:
    settled = _settle(bench, watched)
    events = sum(c.events for c in watched)
    before, started = operator_requests(bench.admin), now()
    time.sleep(bench.args.idle_seconds)
    after, seconds = operator_requests(bench.admin), now() - started
    return {
        "settledAfterSeconds": settled,
        "windowSeconds": round(seconds, 1),
        "operatorRequests": after - before,
        "operatorRequestsPerSecond": round((after - before) / seconds, 3),
        "watchEventsInWindow": sum(c.events for c in watched) - events,
    }


def _has_reached(collection: Collection, *, name: str, phase: str) -> bool:
    return phase in collection.reached.get(name, {})


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50Seconds": round(float(np.percentile(values, 50)), 3),
        "p99Seconds": round(float(np.percentile(values, 99)), 3),
        "maxSeconds": round(max(values), 3),
        "minSeconds": round(min(values), 3),
        "allSeconds": [round(x, 3) for x in values],
    }


def measure_reaction(bench: Bench, namespace: str, watched: Watched) -> dict[str, Any]:
    """One worker finishing -> its job's status.phase Succeeded, each moment taken from the
    watches as its event arrives: the pod Succeeded (KWOK), its batch Job Complete (the
    controller-manager's Job controller), the LLMTrainingJob Succeeded (the operator)."""
    pods, batch, jobs = watched.pods, watched.batch, watched.jobs
    with pods.changed, batch.changed:
        running = sorted(
            (pod, owner, batch.owner[owner])
            for pod, phase in pods.phase.items()
            if phase == "Running"
            and (owner := pods.owner.get(pod, "")) in batch.owner
            and jobs.phase.get(batch.owner[owner]) == "Running"
        )
    chosen = random.Random(bench.args.seed).sample(running, min(bench.args.samples, len(running)))
    annotations = {"metadata": {"annotations": nodes.finish_annotations(exit_code=0)}}
    total, from_pod, from_batch = [], [], []
    timed_out = 0
    for pod, owner, job in chosen:
        started = now()
        bench.admin.merge_patch(f"/api/v1/namespaces/{namespace}/pods/{pod}", annotations)
        if not jobs.wait(partial(_has_reached, name=job, phase="Succeeded"), 120):
            timed_out += 1
            continue
        done = jobs.reached[job]["Succeeded"]
        total.append(done - started)
        if "Succeeded" in pods.reached.get(pod, {}):
            from_pod.append(done - pods.reached[pod]["Succeeded"])
        if "Succeeded" in batch.reached.get(owner, {}):
            from_batch.append(done - batch.reached[owner]["Succeeded"])
        time.sleep(bench.args.pause_seconds)
    return {
        "timedOut": timed_out,
        "podSucceededToJobSucceeded": _stats(from_pod),
        "annotatedToJobSucceeded": _stats(total),
        "batchJobCompleteToJobSucceeded": _stats(from_batch),
    }
