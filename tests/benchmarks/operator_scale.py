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
- **Paced control** (`paced`, tests/benchmarks/paced_plain.py; off with `--no-paced`): the
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
import random
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.benchmarks.operator_startup import REPO
from tests.cluster.conftest import OperatorProcess
from tests.cluster.test_operator import _training_job
from tests.localcluster import components, nodes
from tests.localcluster.cluster import LocalCluster, running_pid

RESULTS = Path(__file__).resolve().parent / "results" / "operator-scale.json"
GROUP, VERSION, PLURAL = "trainkube.io", "v1alpha1", "llmtrainingjobs"
CRDS = ("llmtrainingjobs", "finetunejobs", "evaljobs")
OPERATOR_USER = "trainkube-operator"
FLOW_SCHEMA = "trainkube-benchmark-operator"
BINDING = "trainkube-benchmark-operator"
POOL = nodes.GpuNodePool(name="bench", count=1, gpus=128, cpu="1100", memory="9Ti", max_pods=140)
# The worker of `_training_job(nodes_=1, gpus=1)` with the API's defaults.
WORKER_RESOURCES = {"cpu": "8", "memory": "64Gi", nodes.GPU_RESOURCE: "1"}


def _now() -> float:
    return time.monotonic()


class Api:
    """A small HTTPS client for the local apiserver with one client certificate: raw JSON, so
    that watching thousands of objects costs this process little CPU."""

    def __init__(self, layout: components.Layout, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(cafile=str(layout.pki_dir / "ca.crt"))
        context.load_cert_chain(str(cert), str(key))
        self.base = layout.server_url
        self.http = urllib3.PoolManager(ssl_context=context, maxsize=8)

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> Any:
        reply = self.http.request(
            method,
            self.base + path,
            body=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": content_type},
            timeout=60,
        )
        if reply.status >= 300:
            raise RuntimeError(f"{method} {path}: {reply.status} {reply.data[:300]!r}")
        return json.loads(reply.data) if reply.data[:1] == b"{" else reply.data.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        reply = self.http.request("GET", self.base + path, timeout=60)
        return bool(reply.status == 200)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def watch(self, path: str, resource_version: str | None) -> urllib3.BaseHTTPResponse:
        """An open watch: the call returns once the apiserver has sent its headers, that is
        once the watch is established."""
        fields = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
        if resource_version:
            fields["resourceVersion"] = resource_version
        reply = self.http.request(
            "GET",
            self.base + path,
            fields=fields,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=3700),
        )
        if reply.status != 200:
            raise RuntimeError(f"watch {path}: {reply.status} {reply.read()[:300]!r}")
        return reply


def _phase(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    if status.get("phase"):
        return str(status["phase"])
    for condition in status.get("conditions") or []:
        kind = condition.get("type")
        if kind in ("Succeeded", "Complete", "Failed") and condition.get("status") == "True":
            return "Failed" if kind == "Failed" else "Succeeded"  # a batch Job says Complete
    return ""


class Collection(threading.Thread):
    """Every object of one namespaced collection, kept by a watch: when each was first seen,
    when it first reached each phase, and how many events arrived."""

    def __init__(self, api: Api, path: str) -> None:
        super().__init__(daemon=True)
        self.api, self.path = api, path
        self.first_seen: dict[str, float] = {}
        self.reached: dict[str, dict[str, float]] = {}
        self.phase: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        self.events = 0
        self.last_event = _now()
        self.changed = threading.Condition()
        self._stopped = threading.Event()
        self._version: str | None = None
        self._reply = api.watch(path, None)  # established before anything is applied
        self.start()

    def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a dropped connection: reconnect below
                for event in _events(self._reply):
                    self._apply(event)
            if self._stopped.is_set():
                return
            self._reply = self.api.watch(self.path, self._version)

    def _apply(self, event: dict[str, Any]) -> None:
        stamp = _now()
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":  # e.g. 410 Gone: start over from the current state
            self._version = None
            raise RuntimeError(str(obj))
        self._version = meta.get("resourceVersion") or self._version
        if kind == "BOOKMARK":
            return
        name = meta["name"]
        with self.changed:
            self.events += 1
            self.last_event = stamp
            if kind == "DELETED":
                self.phase.pop(name, None)
            else:
                self.first_seen.setdefault(name, stamp)
                phase = _phase(obj)
                self.phase[name] = phase
                self.reached.setdefault(name, {}).setdefault(phase, stamp)
                owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
                if owners:
                    self.owner[name] = owners[0]["name"]
            self.changed.notify_all()

    def wait(self, check: Callable[[Collection], bool], timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: check(self), timeout=max(timeout_s, 0))

    def count_in(self, phase: str) -> int:
        with self.changed:
            return sum(1 for p in self.phase.values() if p == phase)

    def nth_seen(self, n: int) -> float | None:
        with self.changed:
            times = sorted(self.first_seen.values())
        return times[n - 1] if len(times) >= n else None

    def nth_reached(self, phase: str, n: int) -> float | None:
        with self.changed:
            times = sorted(t[phase] for t in self.reached.values() if phase in t)
        return times[n - 1] if len(times) >= n else None

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(Exception):
            self._reply.shutdown()
            self._reply.release_conn()
        self.join(timeout=5)


def _events(reply: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in reply.stream(1 << 16):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


# --- the operator's own identity, and counting its requests ------------------------------------


def _operator_identity(cluster: LocalCluster, directory: Path) -> Path:
    """A client certificate and kubeconfig for OPERATOR_USER (bound to cluster-admin), and a
    FlowSchema that matches only that user; returns the kubeconfig."""
    pki = cluster.layout.pki_dir
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_USER)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "operator.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "operator.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    document: Any = components.kubeconfig_document(layout=cluster.layout, identity="operator")
    document["users"][0]["user"] = {
        "client-certificate": str(directory / "operator.crt"),
        "client-key": str(directory / "operator.key"),
    }
    kubeconfig = directory / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    rule = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True}
    manifests = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": BINDING},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
            ],
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": FLOW_SCHEMA},
            "spec": {
                "matchingPrecedence": 200,
                "priorityLevelConfiguration": {"name": "workload-high"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                        "resourceRules": [{**rule, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    return kubeconfig


def _summed(text: str, name: str, key: Callable[[dict[str, str]], str]) -> dict[str, float]:
    """The samples called `name` in a /metrics answer, summed by `key` of their labels."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                label = key(sample.labels)
                sums[label] = sums.get(label, 0.0) + sample.value
    return sums


def _requests_by_flow(api: Api) -> dict[str, float]:
    """Requests the apiserver has dispatched so far, by FlowSchema (every client's class:
    the controller-manager's controllers, the scheduler, nodes, the operator, kubectl ...)."""
    text = str(api.get("/metrics"))
    return _summed(
        text,
        "apiserver_flowcontrol_dispatched_requests_total",
        lambda labels: labels["flow_schema"],
    )


def operator_requests(api: Api) -> int:
    """Requests the apiserver has dispatched for FLOW_SCHEMA (that is, for OPERATOR_USER)."""
    return int(_requests_by_flow(api).get(FLOW_SCHEMA, 0.0))


def _controller_manager_requests(layout: components.Layout) -> dict[str, float]:
    """The controller-manager's own count of its requests, by verb and answer, and the seconds
    they waited for its client-side rate limiter (`limiterWait <VERB>`)."""
    pki = layout.pki_dir
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    http = urllib3.PoolManager(ssl_context=context)
    url = f"https://127.0.0.1:{layout.controller_manager_port}/metrics"
    with warnings.catch_warnings():  # unverified on purpose: no warning for it
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        text = http.request("GET", url, timeout=10).data.decode()
    return {
        **_summed(
            text,
            "rest_client_requests_total",
            lambda labels: f"{labels.get('method')} {labels.get('code')}",
        ),
        **_summed(
            text,
            "rest_client_rate_limiter_duration_seconds_sum",
            lambda labels: f"limiterWait {labels.get('verb')}",
        ),
    }


QUIET_SECONDS = 5.0  # a window with at most QUIET_REQUESTS: the controller-manager is idle
QUIET_REQUESTS = 2  # (idle, it sends about one request every 3 s)


def _wait_controller_manager_quiet(bench: Bench) -> float:
    """Wait until the controller-manager has sent at most QUIET_REQUESTS requests in the last
    QUIET_SECONDS (at most the cap); the seconds waited. Its Job controller posts its Events
    through the same client and rate limit as its pod creations, and falls behind with them:
    measured right after the plain run, the Events of the plain jobs (117, answered 404 once
    their namespace was gone) went out during the operator's run and took ~6 s of the Job
    controller's requests from it."""
    layout, started = bench.cluster.layout, _now()

    def sent() -> float:
        counted = _controller_manager_requests(layout)
        return sum(v for k, v in counted.items() if not k.startswith("limiter"))

    samples = [(_now(), sent())]
    while _now() - started < bench.args.cap_seconds:
        time.sleep(0.5)
        samples.append((_now(), sent()))
        window = [count for at, count in samples if at >= samples[-1][0] - QUIET_SECONDS]
        if samples[-1][0] - samples[0][0] >= QUIET_SECONDS and window[-1] - window[0] <= (
            QUIET_REQUESTS
        ):
            break
    return round(_now() - started, 1)


def _requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    moved = {flow: round(after[flow] - before.get(flow, 0.0), 1) for flow in sorted(after)}
    return {flow: count for flow, count in moved.items() if count}


def _calibrate(admin: Api, as_operator: Api) -> None:
    """Make known requests as the operator's user and check that exactly they are counted."""
    for _ in range(60):  # the FlowSchema takes effect once the apiserver has read it
        as_operator.get("/api/v1/namespaces/default")
        if operator_requests(admin) > 0:
            break
        time.sleep(0.5)
    before = operator_requests(admin)
    for _ in range(10):
        as_operator.get("/api/v1/namespaces/default")
    counted = operator_requests(admin) - before
    if counted != 10:
        raise RuntimeError(f"the FlowSchema counted {counted} of 10 requests by {OPERATOR_USER}")


class _AsOperator(LocalCluster):
    """The local cluster as the operator's own user sees it (OperatorProcess runs the operator
    with `cluster.kubeconfig`)."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path) -> None:
        super().__init__(layout=cluster.layout, bin_dir=cluster.bin_dir)
        self._kubeconfig = kubeconfig

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig


# --- one size ----------------------------------------------------------------------------------


def _plain_job(index: int) -> dict[str, Any]:
    """An Indexed Job shaped like one worker of `_training_job(nodes_=1, gpus=1)`."""
    labels = {"app.kubernetes.io/name": "plain-bench", "team": "research"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"plain-{index}", "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "ghcr.io/trainkube/trainer:latest",
                            "command": ["sleep", "infinity"],
                            "resources": {
                                "requests": WORKER_RESOURCES,
                                "limits": WORKER_RESOURCES,
                            },
                        }
                    ],
                },
            },
        },
    }


class Bench:
    """What every step needs: the cluster, clients, options, and where logs go."""

    def __init__(
        self, cluster: LocalCluster, admin: Api, operator_cluster: LocalCluster, args: Any
    ) -> None:
        self.cluster, self.admin, self.operator_cluster, self.args = (
            cluster,
            admin,
            operator_cluster,
            args,
        )
        self.namespaces: list[str] = []
        self.log_dir = Path(args.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def namespace(self, prefix: str, jobs: int) -> str:
        name = f"bench-{prefix}-{jobs}-{int(time.time())}"
        self.cluster.kubectl("create", "namespace", name)
        self.namespaces.append(name)
        self.cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name)
        return name

    def delete_namespace(self, name: str) -> float:
        """Delete it and wait until it is gone; the seconds that took (-1: not within the cap).

        The jobs, batch Jobs and pods go first, each as one delete-collection request, the pods
        with no grace period (KWOK's pods have no process to stop): the namespace controller
        alone would wait out every pod's 30 s grace period."""
        started = _now()
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        for path, grace in (
            (f"/apis/{GROUP}/{VERSION}/namespaces/{name}/{PLURAL}", {}),
            (f"/apis/batch/v1/namespaces/{name}/jobs", {}),
            (f"/api/v1/namespaces/{name}/pods", {"gracePeriodSeconds": 0}),
        ):
            with contextlib.suppress(RuntimeError):
                self.admin.request("DELETE", path, {**options, **grace})
        self.cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
        while _now() - started < self.args.cap_seconds:
            if not self.admin.exists(f"/api/v1/namespaces/{name}"):
                self.namespaces.remove(name)
                return round(_now() - started, 1)
            time.sleep(1)
        return -1.0

    def apply(self, namespace: str, items: list[dict[str, Any]]) -> tuple[float, float]:
        """`kubectl apply` of `items` as one List: (when it started, seconds it took)."""
        body = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
        started = _now()
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=body)
        return started, round(_now() - started, 2)


def _ratio(seconds: float | None, baseline: float | None) -> float | None:
    """`seconds` over `baseline`, to 2 places; None when either was capped (None) or 0."""
    return round(seconds / baseline, 2) if seconds and baseline else None


def _seconds(at: float | None, started: float) -> float | None:
    return None if at is None else round(at - started, 2)


TIMELINE_STEP = 5.0  # seconds between the points of a creation timeline


def _timeline(collection: Collection, started: float) -> list[int]:
    """How many objects of `collection` had been seen 5, 10, 15 ... s after `started`, to the
    last one: where in the run the creations lagged."""
    with collection.changed:
        seen = sorted(at - started for at in collection.first_seen.values())
    if not seen:
        return []
    points = int(seen[-1] // TIMELINE_STEP) + 1
    return [sum(1 for at in seen if at <= (k + 1) * TIMELINE_STEP) for k in range(points)]


def _created_and_running(
    pods: Collection, jobs: int, started: float, deadline: float
) -> dict[str, Any]:
    pods.wait(lambda c: len(c.first_seen) >= jobs, deadline - _now())
    created = pods.nth_seen(jobs)
    pods.wait(lambda c: c.count_in("Running") >= jobs, deadline - _now())
    return {
        "allWorkersCreatedSeconds": _seconds(created, started),
        "allWorkersRunningSeconds": _seconds(pods.nth_reached("Running", jobs), started),
        "workersCreated": len(pods.first_seen),
        "capped": created is None,
    }


def measure_plain(bench: Bench, jobs: int) -> dict[str, Any]:
    namespace = bench.namespace("plain", jobs)
    quiet = _wait_controller_manager_quiet(bench)
    pods = Collection(bench.admin, f"/api/v1/namespaces/{namespace}/pods")
    try:
        cpu, flows = _cpu_seconds(), _requests_by_flow(bench.admin)
        kcm = _controller_manager_requests(bench.cluster.layout)
        started, applied = bench.apply(namespace, [_plain_job(i) for i in range(jobs)])
        row = _created_and_running(pods, jobs, started, started + bench.args.cap_seconds)
        row["cpuSecondsToAllRunning"] = _cpu_between(cpu, _cpu_seconds())
        row["requestsByFlowSchemaToAllRunning"] = _requests_between(
            flows, _requests_by_flow(bench.admin)
        )
        row["controllerManagerRequestsToAllRunning"] = _requests_between(
            kcm, _controller_manager_requests(bench.cluster.layout)
        )
    finally:
        pods.stop()
    row["applySeconds"] = applied
    row["waitedForQuietControllerManagerSeconds"] = quiet
    row["podsCreatedEvery5s"] = _timeline(pods, started)
    row["deleteSeconds"] = bench.delete_namespace(namespace)
    return row


def _rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB), summed over the process group `pid` leads."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])
    return total


CPU_OF = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok")
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(operator_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by the control plane's processes (by name), KWOK, and the
    process group `operator_pid` leads (as "operator")."""
    used: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, _, tail = (proc / "stat").read_text().rpartition(")")
            name, fields = head.partition("(")[2], tail.split()
            seconds = (int(fields[11]) + int(fields[12])) / TICKS
            if operator_pid is not None and int(fields[2]) == operator_pid:
                used["operator"] = used.get("operator", 0.0) + seconds
            elif name.startswith(CPU_OF):
                key = next(n for n in CPU_OF if name.startswith(n))
                used[key] = used.get(key, 0.0) + seconds
    return used


def _cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in sorted(after)}


def _reconciles(operator: OperatorProcess) -> int:
    """Reconciles the operator has finished (its trainkube_reconcile_seconds count)."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return int(sum(_summed(text, "trainkube_reconcile_seconds_count", lambda _: "").values()))


def _wait_leader(bench: Bench, operator: OperatorProcess) -> float:
    """Seconds until the new operator holds the lease (its metric says so, or the Lease names
    its pid); the lease of a stopped one may still run for a while."""
    assert operator.process is not None
    pid, started = operator.process.pid, _now()
    while _now() - started < 120:
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
            if any(line.split()[-1] == "1.0" for line in text.splitlines() if "_leader" in line):
                return round(_now() - started, 1)
        leases = bench.admin.get(
            "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.name%3Dtrainkube-operator"
        )
        holders = [(i.get("spec") or {}).get("holderIdentity") or "" for i in leases["items"]]
        if any(h.endswith(f"-{pid}") for h in holders):
            return round(_now() - started, 1)
        time.sleep(0.5)
    return -1.0


def _settle(bench: Bench, watched: list[Collection]) -> float:
    """Wait until no watched collection has had an event for --settle-seconds (at most the
    cap); the seconds waited."""
    started = _now()
    while _now() - started < bench.args.cap_seconds:
        quiet = _now() - max(c.last_event for c in watched)
        if quiet >= bench.args.settle_seconds:
            break
        time.sleep(bench.args.settle_seconds - quiet)
    return round(_now() - started, 1)


def measure_idle(bench: Bench, watched: list[Collection]) -> dict[str, Any]:
    settled = _settle(bench, watched)
    events = sum(c.events for c in watched)
    before, started = operator_requests(bench.admin), _now()
    time.sleep(bench.args.idle_seconds)
    after, seconds = operator_requests(bench.admin), _now() - started
    return {
        "settledAfterSeconds": settled,
        "windowSeconds": round(seconds, 1),
        "operatorRequests": after - before,
        "operatorRequestsPerSecond": round((after - before) / seconds, 3),
        "watchEventsInWindow": sum(c.events for c in watched) - events,
    }


def _has_reached(collection: Collection, *, name: str, phase: str) -> bool:
    return phase in collection.reached.get(name, {})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Watched:
    """The watches on one operator namespace: worker pods, batch Jobs, LLMTrainingJobs."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.pods = Collection(api, f"/api/v1/namespaces/{namespace}/pods")
        self.batch = Collection(api, f"/apis/batch/v1/namespaces/{namespace}/jobs")
        self.jobs = Collection(api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
        self.all = [self.pods, self.batch, self.jobs]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50Seconds": round(_percentile(values, 50), 3),
        "p99Seconds": round(_percentile(values, 99), 3),
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
        started = _now()
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
    row["waitedForQuietControllerManagerSeconds"] = _wait_controller_manager_quiet(bench)
    watched = Watched(bench.admin, namespace)
    pods, crs = watched.pods, watched.jobs
    try:
        items = [_training_job(f"job-{i}", nodes_=1, gpus=1) for i in range(jobs)]
        cpu = _cpu_seconds(operator.process.pid)
        reconciles, flows = _reconciles(operator), _requests_by_flow(bench.admin)
        kcm = _controller_manager_requests(bench.cluster.layout)
        started, row["applySeconds"] = bench.apply(namespace, items)
        deadline = started + bench.args.cap_seconds
        row.update(_created_and_running(pods, jobs, started, deadline))
        row["cpuSecondsToAllRunning"] = _cpu_between(cpu, _cpu_seconds(operator.process.pid))
        row["reconcilesToAllRunning"] = _reconciles(operator) - reconciles
        moved = _requests_between(flows, _requests_by_flow(bench.admin))
        row["requestsByFlowSchemaToAllRunning"] = moved
        row["operatorRequestsToAllRunning"] = int(moved.get(FLOW_SCHEMA, 0.0))
        row["controllerManagerRequestsToAllRunning"] = _requests_between(
            kcm, _controller_manager_requests(bench.cluster.layout)
        )
        crs.wait(lambda c: c.count_in("Running") >= jobs, deadline - _now())
        row["allJobsRunningSeconds"] = _seconds(crs.nth_reached("Running", jobs), started)
        row["jobsRunning"] = crs.count_in("Running")
        row["cappedRunning"] = row["allJobsRunningSeconds"] is None
        row["ratio"] = _ratio(row["allWorkersCreatedSeconds"], plain["allWorkersCreatedSeconds"])
        row["timelineEvery5s"] = {
            "jobsCreated": _timeline(crs, started),
            "batchJobsCreated": _timeline(watched.batch, started),
            "podsCreated": _timeline(pods, started),
        }
        row["memoryKiB"] = _rss_kib(operator.process.pid)
        with watched.batch.changed:
            arrivals = sorted(max(0.0, at - started) for at in watched.batch.first_seen.values())
        if jobs == bench.args.latency_at:
            row["idle"] = measure_idle(bench, watched.all)
            row["reaction"] = measure_reaction(bench, namespace, watched)
            row["memoryKiBAfter"] = _rss_kib(operator.process.pid)
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


# --- the run -------------------------------------------------------------------------------------


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
    # Here, not at the top: paced_plain builds on this module's pieces.
    from tests.benchmarks.paced_plain import measure_paced  # noqa: PLC0415

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
            kubeconfig = _operator_identity(cluster, Path(tmp))
            _calibrate(
                admin, Api(cluster.layout, Path(tmp) / "operator.crt", Path(tmp) / "operator.key")
            )
            bench = Bench(cluster, admin, _AsOperator(cluster, kubeconfig), args)
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
                    operator["ratioToPaced"] = _ratio(
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
