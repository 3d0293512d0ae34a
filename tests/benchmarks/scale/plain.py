"""Plain Indexed Jobs with no operator running, the operator's yardstick: applied at once
(`measure_plain`, the baseline of the ratio), and created on the operator's own timeline
(`measure_paced`, the control).

The paced control. The operator cannot create a job's batch Job before the job is applied, and
its Jobs reach the controller-manager over the seconds the apply and its reconciles take (at 100
jobs 3.8-4.9 s, against 0.9 s for a plain apply). The Job controller then interleaves the
`ready` updates of the Jobs it started first with the first syncs of those that arrive later,
and those status writes go through the same 20 requests/s as its pod creations. This control
creates the plain Jobs (`plain_job`, as the admin, one POST each) at the moments the operator's
batch Jobs were first seen in its run, with no operator running, and measures the same thing:
the seconds from the first moment to the N-th pod's creation, and the controller-manager's
requests. Against it, `ratioToPaced` is what the operator costs beyond the time its Jobs take to
arrive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.benchmarks.scale.bench import Bench, plain_job
from tests.benchmarks.scale.counting import (
    controller_manager_requests,
    requests_between,
    requests_by_flow,
)
from tests.benchmarks.scale.usage import cpu_between, cpu_seconds
from tests.benchmarks.scale.watch import Collection, created_and_running, now, timeline


def _measure(
    bench: Bench,
    prefix: str,
    jobs: int,
    create: Callable[[str], tuple[float, Callable[[], dict[str, Any]]]],
) -> dict[str, Any]:
    """`jobs` plain Jobs in a fresh namespace, made by `create(namespace)`, which returns when
    the creating started and what to call once every pod runs (it returns the row's own
    fields): the seconds to the N-th pod's creation and to all Running, with the CPU seconds,
    the requests by FlowSchema and the controller-manager's own requests up to then."""
    namespace = bench.namespace(prefix, jobs)
    quiet = bench.wait_quiet()
    pods = Collection(bench.admin, f"/api/v1/namespaces/{namespace}/pods")
    try:
        cpu, flows = cpu_seconds(), requests_by_flow(bench.admin)
        kcm = controller_manager_requests(bench.cluster.layout)
        started, finish = create(namespace)
        row = created_and_running(pods, jobs, started, started + bench.args.cap_seconds)
        row.update(finish())
        row["cpuSecondsToAllRunning"] = cpu_between(cpu, cpu_seconds())
        row["requestsByFlowSchemaToAllRunning"] = requests_between(
            flows, requests_by_flow(bench.admin)
        )
        row["controllerManagerRequestsToAllRunning"] = requests_between(
            kcm, controller_manager_requests(bench.cluster.layout)
        )
    finally:
        pods.stop()
    row["waitedForQuietControllerManagerSeconds"] = quiet
    row["podsCreatedEvery5s"] = timeline(pods, started)
    row["deleteSeconds"] = bench.delete_namespace(namespace)
    return row


def measure_plain(bench: Bench, jobs: int) -> dict[str, Any]:
    """The baseline: the plain Jobs applied at once, as one List."""

    def create(namespace: str) -> tuple[float, Callable[[], dict[str, Any]]]:
        started, applied = bench.apply(namespace, [plain_job(i) for i in range(jobs)])
        return started, lambda: {"applySeconds": applied}

    return _measure(bench, "plain", jobs, create)


def _create_on_time(bench: Bench, namespace: str, offsets: list[float], started: float) -> None:
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    for index, offset in enumerate(offsets):
        delay = started + offset - now()
        if delay > 0:
            time.sleep(delay)
        bench.admin.request("POST", path, plain_job(index))


def measure_paced(bench: Bench, offsets: list[float]) -> dict[str, Any]:
    """The control: plain Job number i created `offsets[i]` seconds after the start."""

    def create(namespace: str) -> tuple[float, Callable[[], dict[str, Any]]]:
        started = now()
        creator = threading.Thread(
            target=_create_on_time, args=(bench, namespace, offsets, started), daemon=True
        )
        creator.start()

        def finish() -> dict[str, Any]:
            creator.join()
            return {"lastJobCreatedSeconds": round(offsets[-1], 2)}

        return started, finish

    return _measure(bench, "paced", len(offsets), create)
