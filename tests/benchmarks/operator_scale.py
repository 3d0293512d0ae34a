"""Benchmark: the operator at scale (issue 11's "Done when"), on the local cluster's KWOK GPU
nodes with the real operator process, 1 worker x 1 GPU per LLMTrainingJob.

    flock /tmp/trainkube-cluster.lock .venv/bin/python -m tests.benchmarks.operator_scale
    ... --sizes 20 100 --samples 20 --idle-seconds 30 --latency-at 100   # a quick run

For each size N (default 100, 500 and 2000 jobs live), one after the other, each in fresh
namespaces that are deleted (and waited for) before the next step:

- **Plain baseline.** N Indexed `batch/v1` Jobs of the same pod shape as the operator's workers
  (1 completion, 8 CPUs, 64 GiB, 1 GPU, `restartPolicy: Never`, `backoffLimit: 0`), applied as
  one List with `kubectl apply`, with no operator running: the seconds from the start of the
  apply to the N-th pod's creation.
- **Operator.** A fresh operator process (leader before anything is applied); N LLMTrainingJobs
  applied the same way: the seconds to the N-th worker pod's creation. `ratio` is the two
  divided (goal <= 1.1). Then the time until every job's `status.phase` is `Running`.
- **Same start.** Before each apply the benchmark waits until the controller-manager is idle
  (at most 2 requests in 5 s, from its own request counters): its Job controller sends its
  Events through the rate limit of its pod creations and lags with them, and the plain run's
  backlog would otherwise be sent during the operator's run. Each row records the CPU seconds
  of the control plane, KWOK and the operator, the requests by FlowSchema and the
  controller-manager's own requests up to all workers running, and a creation timeline.
- **Paced control** (`paced`, scale/plain.py; off with `--no-paced`): the
  plain Jobs again, each created at the moment the operator's batch Job of the same rank was
  first seen in its run, with no operator: `ratioToPaced` is the operator's time over that,
  what it costs beyond the seconds its Jobs take to arrive.
- **Memory.** The operator's resident set (VmRSS, and its peak VmHWM, from /proc, summed over
  its process group) once all N jobs are Running.
- At one size (`--latency-at`, default 500), with all jobs Running:
  - **Requests while idle.** Once the jobs' and pods' watches have seen no event for
    `--settle-seconds`, the operator's apiserver requests are counted over `--idle-seconds`.
    The operator runs with a kubeconfig of its own: a client certificate for the user
    `trainkube-operator` (signed here by the local cluster's CA, bound to `cluster-admin`),
    and a FlowSchema that matches only that user. `apiserver_request_total` has no user label,
    but API Priority and Fairness counts every request it dispatches per FlowSchema, so the
    rise of `apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` on the
    apiserver's /metrics is exactly the operator's requests (every verb, watches when they are
    opened, list and get included). A calibration of known requests as that user checks the
    count before it is used.
  - **Reaction.** `--samples` times, one after the other: a random Running job's worker pod is
    annotated with `finish_annotations(exit_code=0)` (KWOK then ends it `Succeeded`). From
    the watches: the moment the pod is `Succeeded`, its batch Job `Complete`, and the job's
    `status.phase` `Succeeded`. The headline is pod Succeeded -> job Succeeded ("one pod
    finishing -> its job's status"; p50, p99, maximum; goal p99 <= 1 s); the same from the
    annotation and from the batch Job's completion are recorded too (the controller-manager's
    Job controller batches pod events for 1 s before it writes a Job's status; the latter has
    no samples when the operator marks the job Succeeded before the batch Job is Complete).

Everything is observed through watches (raw JSON, stamped as each event arrives), not by
polling. A step that takes longer than `--cap-seconds` is cut off and recorded as capped,
with how far it got. At the end the namespaces, the extra GPU nodes (pool `bench`, removed
again), the FlowSchema and the binding are deleted. Prints a table and writes
tests/benchmarks/results/operator-scale.json (numbers, machine, date, git commit).

`--operator-commit REV` runs the operator (and applies the CRDs) from a clean export of that
commit instead of the working tree.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.benchmarks.operator_startup import REPO
from tests.benchmarks.scale.bench import Bench, ratio_of
from tests.benchmarks.scale.counting import (
    BINDING,
    FLOW_SCHEMA,
    AsOperator,
    calibrate,
    controller_manager_requests,
    operator_identity,
    requests_between,
    requests_by_flow,
)
from tests.benchmarks.scale.plain import measure_paced, measure_plain
from tests.benchmarks.scale.reaction import measure_idle, measure_reaction
from tests.benchmarks.scale.usage import cpu_between, cpu_seconds, finished_reconciles, rss_kib
from tests.benchmarks.scale.watch import (
    GROUP,
    Api,
    Watched,
    created_and_running,
    now,
    seconds_after,
    timeline,
)
from tests.cluster.conftest import OperatorProcess
from tests.cluster.test_operator import _training_job
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster, running_pid

RESULTS = Path(__file__).resolve().parent / "results" / "operator-scale.json"
CRDS = ("llmtrainingjobs", "finetunejobs", "evaljobs")
POOL = nodes.GpuNodePool(name="bench", count=1, gpus=128, cpu="1100", memory="9Ti", max_pods=140)


def _wait_leader(bench: Bench, operator: OperatorProcess) -> float:
    """Seconds until the new operator holds the lease (its metric says so, or the Lease names
    its pid); the lease of a stopped one may still run for a while."""
    assert operator.process is not None
    pid, started = operator.process.pid, now()
    while now() - started < 120:
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
            if any(line.split()[-1] == "1.0" for line in text.splitlines() if "_leader" in line):
                return round(now() - started, 1)
        leases = bench.admin.get(
            "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.name%3Dtrainkube-operator"
        )
        holders = [(i.get("spec") or {}).get("holderIdentity") or "" for i in leases["items"]]
        if any(h.endswith(f"-{pid}") for h in holders):
            return round(now() - started, 1)
        time.sleep(0.5)
    return -1.0


def _log_findings(lines: list[str]) -> dict[str, Any]:
    """Tracebacks in the operator's log, and the most common exception lines."""
    exceptions = Counter(
        line.strip()[:160]
        for line in lines
        if re.match(r"^[\w.]+(Error|Exception)\b", line) or " ERROR " in line
    )
    return {
        "lines": len(lines),
        "tracebacks": sum("Traceback (most recent call last)" in line for line in lines),
        "topExceptions": [f"{count} x {text}" for text, count in exceptions.most_common(5)],
    }


def _read_lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def measure_operator(
    bench: Bench, jobs: int, plain: dict[str, Any]
) -> tuple[dict[str, Any], list[float]]:
    """The operator's row, and when each of its batch Jobs was first seen (seconds after the
    apply started) for the paced control."""
    log = bench.log_dir / f"operator-{jobs}.log"
    log.unlink(missing_ok=True)
    operator = OperatorProcess(bench.operator_cluster, log)
    operator.start()
    assert operator.process is not None
    row: dict[str, Any] = {"leaderAfterSeconds": _wait_leader(bench, operator)}
    namespace = bench.namespace("operator", jobs)
    row["waitedForQuietControllerManagerSeconds"] = bench.wait_quiet()
    watched = Watched(bench.admin, namespace)
    pods, crs = watched.pods, watched.jobs
    try:
        items = [_training_job(f"job-{i}", nodes_=1, gpus=1) for i in range(jobs)]
        cpu = cpu_seconds(operator.process.pid)
        reconciles, flows = finished_reconciles(operator), requests_by_flow(bench.admin)
        kcm = controller_manager_requests(bench.cluster.layout)
        started, row["applySeconds"] = bench.apply(namespace, items)
        deadline = started + bench.args.cap_seconds
        row.update(created_and_running(pods, jobs, started, deadline))
        row["cpuSecondsToAllRunning"] = cpu_between(cpu, cpu_seconds(operator.process.pid))
        row["reconcilesToAllRunning"] = finished_reconciles(operator) - reconciles
        moved = requests_between(flows, requests_by_flow(bench.admin))
        row["requestsByFlowSchemaToAllRunning"] = moved
        row["operatorRequestsToAllRunning"] = int(moved.get(FLOW_SCHEMA, 0.0))
        row["controllerManagerRequestsToAllRunning"] = requests_between(
            kcm, controller_manager_requests(bench.cluster.layout)
        )
        crs.wait(lambda c: c.count_in("Running") >= jobs, deadline - now())
        row["allJobsRunningSeconds"] = seconds_after(crs.nth_reached("Running", jobs), started)
        row["jobsRunning"] = crs.count_in("Running")
        row["cappedRunning"] = row["allJobsRunningSeconds"] is None
        row["ratio"] = ratio_of(row["allWorkersCreatedSeconds"], plain["allWorkersCreatedSeconds"])
        row["timelineEvery5s"] = {
            "jobsCreated": timeline(crs, started),
            "batchJobsCreated": timeline(watched.batch, started),
            "podsCreated": timeline(pods, started),
        }
        row["memoryKiB"] = rss_kib(operator.process.pid)
        with watched.batch.changed:
            arrivals = sorted(max(0.0, at - started) for at in watched.batch.first_seen.values())
        if jobs == bench.args.latency_at:
            row["idle"] = measure_idle(bench, watched.all)
            row["reaction"] = measure_reaction(bench, namespace, watched)
            row["memoryKiBAfter"] = rss_kib(operator.process.pid)
    finally:
        for collection in watched.all:
            collection.stop()
        measured = len(_read_lines(log))
        row["operatorAliveAfterMeasuring"] = operator.process.poll() is None
        row["deleteSeconds"] = bench.delete_namespace(namespace)
        operator.stop()
        lines = _read_lines(log)
        row["operatorLog"] = {
            "path": str(log),
            "whileMeasuring": _log_findings(lines[:measured]),
            "whileDeleting": _log_findings(lines[measured:]),
        }
    return row, arrivals


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _operator_source(commit: str | None, directory: Path) -> dict[str, Any]:
    """Where the operator and CRDs come from: a clean export of `commit`, or the checkout."""
    if not commit:
        dirty = bool(_git("status", "--porcelain", "--", "operator", "crds"))
        return {"commit": _git("rev-parse", "HEAD"), "workingTree": True, "dirty": dirty}
    export = directory / "source"
    export.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "operator", "crds"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
    # The editable install's finder comes after PYTHONPATH on the operator's import path.
    os.environ["PYTHONPATH"] = str(export / "operator")
    return {"commit": _git("rev-parse", commit), "workingTree": False, "export": str(export)}


def _machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if "model name" in x), ""
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpuModel": model,
        "memoryGiB": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "python": platform.python_version(),
    }


def _pool(sizes: list[int]) -> nodes.GpuNodePool:
    """Extra KWOK GPU nodes for the largest size, beside the four default ones (which other
    tests rely on and are left as they are)."""
    count = math.ceil(max(sizes) * 1.05 / POOL.gpus) + 1
    return nodes.GpuNodePool(
        name=POOL.name,
        count=count,
        gpus=POOL.gpus,
        cpu=POOL.cpu,
        memory=POOL.memory,
        max_pods=POOL.max_pods,
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'jobs':>6} {'plain s':>8} {'operator s':>10} {'ratio':>6} {'paced s':>8} "
        f"{'/paced':>6} {'all Running s':>13} "
        f"{'RSS MiB':>8} {'idle req/s':>10} {'p50 s':>6} {'p99 s':>6} {'max s':>6}"
        "  (p50/p99/max: worker Succeeded -> job Succeeded)"
    )
    for row in rows:
        op, plain = row["operator"], row["plain"]
        idle = op.get("idle") or {}
        reaction = (op.get("reaction") or {}).get("podSucceededToJobSucceeded") or {}
        rss = op.get("memoryKiB", {}).get("VmRSS")
        print(
            f"{row['jobs']:>6} {_fmt(plain['allWorkersCreatedSeconds']):>8} "
            f"{_fmt(op.get('allWorkersCreatedSeconds')):>10} {_fmt(op.get('ratio')):>6} "
            f"{_fmt((row.get('paced') or {}).get('allWorkersCreatedSeconds')):>8} "
            f"{_fmt(op.get('ratioToPaced')):>6} "
            f"{_fmt(op.get('allJobsRunningSeconds')):>13} "
            f"{_fmt(rss and round(rss / 1024)):>8} "
            f"{_fmt(idle.get('operatorRequestsPerSecond')):>10} "
            f"{_fmt(reaction.get('p50Seconds')):>6} {_fmt(reaction.get('p99Seconds')):>6} "
            f"{_fmt(reaction.get('maxSeconds')):>6}"
        )


def _arguments() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--latency-at", type=int, default=500, help="size for idle and reaction")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--settle-seconds", type=float, default=10)
    parser.add_argument("--pause-seconds", type=float, default=0.5, help="between samples")
    parser.add_argument("--cap-seconds", type=float, default=900, help="longest for one step")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--operator-commit", help="run the operator of this commit")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--log-dir", default="/tmp/trainkube-operator-scale")
    parser.add_argument(
        "--no-paced",
        dest="paced",
        action="store_false",
        help="skip the control of plain Jobs created on the operator's timeline (paced_plain)",
    )
    return parser.parse_args()


def _cleanup(bench: Bench | None, cluster: LocalCluster, pool: nodes.GpuNodePool) -> None:
    if bench:
        for name in list(bench.namespaces):
            with contextlib.suppress(Exception):
                bench.delete_namespace(name)
    with contextlib.suppress(Exception):
        cluster.kubectl("delete", "node", "-l", f"trainkube.io/node-pool={pool.name}")
    with contextlib.suppress(Exception):
        cluster.kubectl(
            "delete",
            "--ignore-not-found",
            f"flowschema.flowcontrol.apiserver.k8s.io/{FLOW_SCHEMA}",
            f"clusterrolebinding/{BINDING}",
        )


def main() -> None:
    args = _arguments()
    started_at = datetime.datetime.now(datetime.UTC)
    checkout = _git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        source = _operator_source(args.operator_commit, Path(tmp))
        crds = Path(source.get("export") or REPO) / "crds"
        cluster = LocalCluster.prepare()
        cluster.up()
        if running_pid(cluster.layout, "trainkube") is not None:
            sys.exit("an operator (the demo's?) already runs against this cluster; stop it first")
        pool = _pool(args.sizes)
        cluster.up(pool=pool)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        cluster.wait_condition("Established", *[f"crd/{name}.{GROUP}" for name in CRDS])
        pki = cluster.layout.pki_dir
        admin = Api(cluster.layout, pki / "admin.crt", pki / "admin.key")
        bench = None
        rows = []
        try:
            kubeconfig = operator_identity(cluster, Path(tmp))
            calibrate(
                admin, Api(cluster.layout, Path(tmp) / "operator.crt", Path(tmp) / "operator.key")
            )
            bench = Bench(cluster, admin, AsOperator(cluster, kubeconfig), args)
            for jobs in args.sizes:
                print(f"--- {jobs} jobs", flush=True)
                plain = measure_plain(bench, jobs)
                print("plain", json.dumps(plain), flush=True)
                operator, arrivals = measure_operator(bench, jobs, plain)
                print("operator", json.dumps(operator), flush=True)
                row = {"jobs": jobs, "plain": plain, "operator": operator}
                if args.paced and len(arrivals) == jobs:
                    paced = row["paced"] = measure_paced(bench, arrivals)
                    print("paced", json.dumps(paced), flush=True)
                    operator["ratioToPaced"] = ratio_of(
                        operator["allWorkersCreatedSeconds"], paced["allWorkersCreatedSeconds"]
                    )
                rows.append(row)
        finally:
            _cleanup(bench, cluster, pool)
    print_table(rows)
    result = {
        "what": "issue 11 at scale: apply -> all workers created (operator vs plain Indexed "
        "Jobs), one worker finishing -> job Succeeded, operator apiserver requests/s while "
        "idle, operator memory; KWOK GPU nodes, 1 worker x 1 GPU per job",
        "goals": {"ratio": 1.1, "reactionP99Seconds": 1.0, "idleRequestsPerSecond": 1.0},
        "date": started_at.isoformat(timespec="seconds"),
        "gitCommit": checkout,
        "operatorSource": {k: v for k, v in source.items() if k != "export"},
        "machine": _machine(),
        "pool": {"name": pool.name, "nodes": pool.count, "gpusPerNode": pool.gpus},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
