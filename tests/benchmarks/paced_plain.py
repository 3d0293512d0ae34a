"""A control for operator_scale: plain Indexed Jobs created on the operator's own timeline.

The operator cannot create a job's batch Job before the job is applied, and its Jobs reach
the controller-manager over the seconds the apply and its reconciles take (at 100 jobs
3.8-4.9 s, against 0.9 s for a plain apply). The Job controller then interleaves the `ready`
updates of the Jobs it started first with the first syncs of those that arrive later, and
those status writes go through the same 20 requests/s as its pod creations. This control
creates the plain Jobs (the benchmark's `_plain_job`, as the admin, one POST each) at the
moments the operator's batch Jobs were first seen in its run, with no operator running, and
measures the same thing: the seconds from the first moment to the N-th pod's creation, and the
controller-manager's requests. Against it, `ratioToPaced` is what the operator costs beyond
the time its Jobs take to arrive.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.benchmarks.operator_scale import (
    Bench,
    Collection,
    _controller_manager_requests,
    _created_and_running,
    _now,
    _plain_job,
    _requests_between,
    _timeline,
    _wait_controller_manager_quiet,
)


def _create_on_time(bench: Bench, namespace: str, offsets: list[float], started: float) -> None:
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    for index, offset in enumerate(offsets):
        delay = started + offset - _now()
        if delay > 0:
            time.sleep(delay)
        bench.admin.request("POST", path, _plain_job(index))


def measure_paced(bench: Bench, offsets: list[float]) -> dict[str, Any]:
    jobs = len(offsets)
    namespace = bench.namespace("paced", jobs)
    quiet = _wait_controller_manager_quiet(bench)
    pods = Collection(bench.admin, f"/api/v1/namespaces/{namespace}/pods")
    try:
        kcm = _controller_manager_requests(bench.cluster.layout)
        started = _now()
        creator = threading.Thread(
            target=_create_on_time, args=(bench, namespace, offsets, started), daemon=True
        )
        creator.start()
        row = _created_and_running(pods, jobs, started, started + bench.args.cap_seconds)
        creator.join()
        row["controllerManagerRequestsToAllRunning"] = _requests_between(
            kcm, _controller_manager_requests(bench.cluster.layout)
        )
        row["lastJobCreatedSeconds"] = round(offsets[-1], 2)
    finally:
        pods.stop()
    row["waitedForQuietControllerManagerSeconds"] = quiet
    row["podsCreatedEvery5s"] = _timeline(pods, started)
    row["deleteSeconds"] = bench.delete_namespace(namespace)
    return row
