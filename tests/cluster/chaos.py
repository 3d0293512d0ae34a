"""The chaos harness: many job lifecycles on KWOK GPU nodes with failures injected from a seeded
schedule, while the real operator is SIGKILLed (at random, and aimed 0-3 s after an injected
event), dies in its own crash hooks, and the apiserver restarts once. Watches on the pods, the
batch Jobs and the jobs record everything as it happens, so the invariants can be checked both
while it runs and from the apiserver afterwards.

One seed (printed) draws every lifecycle's script and every kill; timing is not replayable, so a
replay reproduces the schedule, not the exact interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.cluster.test_operator import _training_job
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster, is_healthy, running_pid
from tests.ports import free_port

GROUP, VERSION = "trainkube.io", "v1alpha1"
JOB_LABEL = f"{GROUP}/job"
KIND_LABEL = f"{GROUP}/kind"
ATTEMPT_LABEL = f"{GROUP}/attempt"
REPORT_LABEL = f"{GROUP}/report"
COMPONENT_LABEL = "app.kubernetes.io/component"
ROLLBACK_ANNOTATION = f"{GROUP}/rollback-to"
TIMEOUT = (5, 15)  # connect, read: every call the harness makes
PLURALS = {
    "LLMTrainingJob": "llmtrainingjobs",
    "FineTuneJob": "finetunejobs",
    "EvalJob": "evaljobs",
}
TERMINAL_TYPES = ("Succeeded", "Failed")


# ------------------------------------------------------------------------------------------------
# Reading objects


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def is_true(obj: dict[str, Any] | None, kind: str) -> bool:
    found = condition(obj, kind)
    return bool(found and found.get("status") == "True")


def terminal_state(obj: dict[str, Any] | None) -> str | None:
    """'Succeeded/<reason>' or 'Failed/<reason>' for a finished job; None while it is not."""
    for kind in TERMINAL_TYPES:
        found = condition(obj, kind)
        if found and found.get("status") == "True":
            return f"{kind}/{found.get('reason')}"
    return None


def attempt_of(obj: dict[str, Any]) -> int:
    """The attempt number of a worker pod or batch Job: its label, else its name's -a<N>."""
    labels = obj["metadata"].get("labels") or {}
    if ATTEMPT_LABEL in labels:
        return int(labels[ATTEMPT_LABEL])
    name = labels.get("batch.kubernetes.io/job-name") or obj["metadata"]["name"]
    found = re.search(r"-a(\d+)$", name)
    return int(found.group(1)) if found else 0


def owner_key(obj: dict[str, Any]) -> str:
    """'<kind>/<job>' of a child, from its labels."""
    labels = obj["metadata"].get("labels") or {}
    return f"{labels.get(KIND_LABEL, '?')}/{labels.get(JOB_LABEL, '?')}"


def pod_alive(pod: dict[str, Any]) -> bool:
    """A pod that exists and has not ended counts as alive, terminating or not (on a real node a
    terminating container still runs through its grace period)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def counts(status: dict[str, Any]) -> tuple[int, int]:
    """(restarts, rollbacks) as status counts them (status.recovery; an operator without
    recovery.rollbacks counts the entries of status.rollbacks)."""
    recovery = status.get("recovery") or {}
    rollbacks = recovery.get("rollbacks")
    if rollbacks is None:
        rollbacks = len(status.get("rollbacks") or [])
    return int(recovery.get("restarts") or 0), int(rollbacks)


def raw_items(response: Any) -> tuple[list[dict[str, Any]], str]:
    body = json.loads(response.data)
    return list(body["items"]), str(body["metadata"]["resourceVersion"])


# ------------------------------------------------------------------------------------------------
# Watches


class Watcher(threading.Thread):
    """Follows one list call with a watch; resumes from the last resourceVersion after any break
    (an apiserver restart included), relists after 410 Gone and then reports as DELETED what
    vanished meanwhile. `handle(event_type, object, monotonic_time)` sees every event."""

    def __init__(self, name: str, list_call: Callable[..., Any], handle: Callable[..., None]):
        super().__init__(name=f"watch-{name}", daemon=True)
        self.list_call, self.handle = list_call, handle
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.relists = 0  # after the first list
        self.breaks = 0
        self._known: dict[str, dict[str, Any]] = {}
        self._response: Any = None

    def _relist(self) -> str:
        items, version = raw_items(self.list_call(_preload_content=False, _request_timeout=TIMEOUT))
        now, seen = time.monotonic(), set()
        for item in items:
            uid = item["metadata"]["uid"]
            seen.add(uid)
            self._deliver("MODIFIED" if uid in self._known else "ADDED", item, now)
        for uid in set(self._known) - seen:
            self._deliver("DELETED", self._known[uid], now)
        if self.synced.is_set():
            self.relists += 1
        self.synced.set()
        return version

    def _deliver(self, kind: str, obj: dict[str, Any], now: float) -> None:
        uid = obj["metadata"]["uid"]
        if kind == "DELETED":
            self._known.pop(uid, None)
        else:
            self._known[uid] = obj
        self.handle(kind, obj, now)

    def run(self) -> None:
        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                self._response = self.list_call(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=30,
                    _preload_content=False,
                    _request_timeout=(5, 60),
                )
                for line in iter_resp_lines(self._response):
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._deliver(event["type"], obj, time.monotonic())
            except Exception:  # the apiserver went away, a read timed out: resume
                if self.stopping.is_set():
                    return
                self.breaks += 1
                time.sleep(0.5)
            finally:
                if self._response is not None:
                    with contextlib.suppress(Exception):
                        self._response.close()
                    self._response = None

    def stop(self) -> None:
        self.stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        self.join(timeout=10)


def _line(history: list[str], when: float, text: str) -> None:
    if not history or history[-1].split(" ", 1)[1] != text:
        history.append(f"{when:9.2f} {text}")


class PodLedger:
    """Worker pods as the watch sees them: per job, the attempts with a pod alive, and every time
    two attempts had pods alive at once."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.lock = threading.Lock()
        self.alive: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
        self.history: dict[str, list[str]] = defaultdict(list)
        self.overlaps: dict[str, list[str]] = defaultdict(list)
        self.pods_of_attempt: dict[tuple[str, int], set[str]] = defaultdict(set)

    def handle(self, kind: str, pod: dict[str, Any], when: float) -> None:
        key, attempt = owner_key(pod), attempt_of(pod)
        meta, status = pod["metadata"], pod.get("status") or {}
        alive = kind != "DELETED" and pod_alive(pod)
        with self.lock:
            self.pods_of_attempt[(key, attempt)].add(meta["uid"])
            terminating = " terminating" if meta.get("deletionTimestamp") else ""
            text = f"pod {meta['name']} a{attempt} {kind} {status.get('phase')}{terminating}"
            _line(self.history[key], when - self.origin, text)
            if alive:
                self.alive[key][meta["uid"]] = (attempt, meta["name"])
            else:
                self.alive[key].pop(meta["uid"], None)
            live = self.alive[key].values()
            if len({a for a, _ in live}) > 1:
                names = ", ".join(sorted(f"{n} (a{a})" for a, n in live))
                self.overlaps[key].append(f"{when - self.origin:.2f}: alive at once: {names}")


class BatchJobLedger:
    """Batch Jobs of attempts: which uids each attempt number had, and when each was created."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.lock = threading.Lock()
        self.uids: dict[tuple[str, int], set[str]] = defaultdict(set)
        # (when seen, resourceVersion when first seen (its creation's, from a watch), attempt)
        self.added: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        self.history: dict[str, list[str]] = defaultdict(list)

    def handle(self, kind: str, job: dict[str, Any], when: float) -> None:
        labels = job["metadata"].get("labels") or {}
        if labels.get(COMPONENT_LABEL) != "worker":
            return
        key, attempt, uid = owner_key(job), attempt_of(job), job["metadata"]["uid"]
        ended = [
            c["type"]
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        ]
        with self.lock:
            if uid not in self.uids[(key, attempt)]:
                self.uids[(key, attempt)].add(uid)
                version = int(job["metadata"]["resourceVersion"])
                self.added[key].append((when, version, attempt))
            gone = " terminating" if job["metadata"].get("deletionTimestamp") else ""
            text = f"job {job['metadata']['name']} a{attempt} {kind}{gone} {'/'.join(ended)}"
            _line(self.history[key], when - self.origin, text.rstrip())

    def duplicates(self, key: str) -> list[int]:
        with self.lock:
            return sorted(a for (k, a), uids in self.uids.items() if k == key and len(uids) > 1)

    def created_after(self, key: str, when: float) -> list[int]:
        """Attempts whose batch Job the watch first saw after `when` (monotonic time)."""
        with self.lock:
            return sorted(a for t, _, a in self.added.get(key, []) if t > when)

    def created_after_version(self, key: str, version: int) -> list[int]:
        """Attempts whose batch Job was created after resourceVersion `version` (one etcd: its
        revisions order every write in the cluster)."""
        with self.lock:
            return sorted(a for _, v, a in self.added.get(key, []) if v > version)


class StatusLedger:
    """The jobs' spec.suspend and status as the watch sees them, and when each first finished."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.lock = threading.Lock()
        self.history: dict[str, list[str]] = defaultdict(list)
        self.terminal_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        # Each suspension seen: the resourceVersion of the first status that said Suspended.
        self.suspended_since: dict[str, list[int]] = defaultdict(list)
        self.suspended: set[str] = set()  # Suspended=True, and spec.suspend since
        self.unsuspended: dict[str, list[str]] = defaultdict(list)

    def handle(self, kind: str, obj: dict[str, Any], when: float) -> None:
        key = f"{obj.get('kind', '?')}/{obj['metadata']['name']}"
        status = obj.get("status") or {}
        attempts = ",".join(
            f"{a.get('number')}{':' + a['reason'] if a.get('reason') else ''}"
            for a in status.get("attempts") or []
        )
        restarts, rollbacks = counts(status)
        conds = " ".join(
            f"{c['type']}={c['status']}/{c.get('reason')}" for c in status.get("conditions") or []
        )
        suspend = bool((obj.get("spec") or {}).get("suspend"))
        text = (
            f"{kind} rv={obj['metadata'].get('resourceVersion')} suspend={suspend} "
            f"phase={status.get('phase')} attempts=[{attempts}] restarts={restarts} "
            f"rollbacks={rollbacks} {conds}"
        )
        with self.lock:
            _line(self.history[key], when - self.origin, text)
            if terminal_state(obj) and key not in self.terminal_at:
                self.terminal_at[key] = when
            if kind == "DELETED":
                self.deleted_at.setdefault(key, when)
            if not suspend or kind == "DELETED":
                self.suspended.discard(key)
            elif is_true(obj, "Suspended"):
                if key not in self.suspended:
                    self.suspended_since[key].append(int(obj["metadata"]["resourceVersion"]))
                self.suspended.add(key)
            elif key in self.suspended:  # still spec.suspend, no longer Suspended
                self.unsuspended[key].append(f"{when - self.origin:.2f} {text}")


@dataclass
class Recorders:
    pods: PodLedger
    jobs: BatchJobLedger
    statuses: StatusLedger
    watchers: list[Watcher]

    @classmethod
    def start(cls, api: Any, namespace: str, kinds: Iterable[str], origin: float) -> Recorders:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        custom = client.CustomObjectsApi(api)
        made = cls(PodLedger(origin), BatchJobLedger(origin), StatusLedger(origin), [])

        def pods(**kw: Any) -> Any:
            return core.list_namespaced_pod(namespace, label_selector=JOB_LABEL, **kw)

        def jobs(**kw: Any) -> Any:
            return batch.list_namespaced_job(namespace, label_selector=JOB_LABEL, **kw)

        made.watchers += [
            Watcher("pods", pods, made.pods.handle),
            Watcher("jobs", jobs, made.jobs.handle),
        ]
        for kind in kinds:

            def custom_list(plural: str = PLURALS[kind], **kw: Any) -> Any:
                return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kw)

            def with_kind(event: str, obj: dict[str, Any], when: float, kind: str = kind) -> None:
                obj.setdefault("kind", kind)
                made.statuses.handle(event, obj, when)

            made.watchers.append(Watcher(kind, custom_list, with_kind))
        for watcher in made.watchers:
            watcher.start()
        for watcher in made.watchers:
            if not watcher.synced.wait(30):
                raise RuntimeError(f"{watcher.name} never listed")
        return made

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()

    def story(self, key: str, limit: int = 60) -> str:
        """Everything the watches saw of one job, in time order."""
        lines = [
            *self.statuses.history.get(key, []),
            *self.pods.history.get(key, []),
            *self.jobs.history.get(key, []),
        ]
        lines.sort(key=lambda text: float(text.split()[0]))
        if len(lines) > limit:
            lines = [f"... {len(lines) - limit} earlier lines", *lines[-limit:]]
        return "\n".join(f"    {text}" for text in lines)


# ------------------------------------------------------------------------------------------------
# The operator, killed and restarted


class ChaosOperator:
    """`trainkube operator --namespace NS` as a real process, restarted whenever it dies: by a
    SIGKILL from `kill`, or by its own crash hooks (TRAINKUBE_CRASH_POINTS, on for a share of
    its incarnations). Before each start it deletes the dead leader's Lease, so the new process
    leads at once instead of waiting out a lease nobody renews (not what this test is about)."""

    def __init__(
        self,
        cluster: LocalCluster,
        api: Any,
        namespace: str,
        log: Path,
        *,
        rng: random.Random,
        crash_points: str = "",
        hook_share: float = 0.0,
    ) -> None:
        self.cluster, self.namespace, self.log = cluster, namespace, log
        self.coordination = client.CoordinationV1Api(api)
        self.rng, self.crash_points, self.hook_share = rng, crash_points, hook_share
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.RLock()
        self.started_at = 0.0
        self.incarnations = 0
        self.hooked = False
        self.deaths: Counter[str] = Counter()

    def _free_lease(self) -> None:
        coordination = self.coordination
        leases = coordination.list_namespaced_lease(self.namespace, _request_timeout=TIMEOUT)
        for lease in leases.items:
            with contextlib.suppress(ApiException):
                coordination.delete_namespaced_lease(
                    lease.metadata.name, self.namespace, _request_timeout=TIMEOUT
                )

    def start(self, *, hooks: bool | None = None) -> None:
        with self.lock:
            self._free_lease()
            hooked = self.rng.random() < self.hook_share if hooks is None else hooks
            env = {
                **os.environ,
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "POD_NAMESPACE": self.namespace,
            }
            for name in ("TRAINKUBE_ENABLE_TEST_HOOKS", "TRAINKUBE_CRASH_POINTS"):
                env.pop(name, None)
            if hooked and self.crash_points:
                env["TRAINKUBE_ENABLE_TEST_HOOKS"] = "1"
                env["TRAINKUBE_CRASH_POINTS"] = self.crash_points
                env["TRAINKUBE_CRASH_SEED"] = str(self.rng.randrange(2**31))
            command = [
                str(Path(sys.executable).parent / "trainkube"),
                "operator",
                f"--namespace={self.namespace}",
                f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                "--metrics-port=0",
            ]
            with self.log.open("ab") as out:
                out.write(f"\n=== incarnation {self.incarnations + 1} hooks={hooked}\n".encode())
                out.flush()
                self.process = subprocess.Popen(
                    command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.incarnations += 1
            self.hooked = hooked
            self.started_at = time.monotonic()

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def reap(self) -> bool:
        """Whether it died by itself (recorded by exit status); a dead one is restarted."""
        with self.lock:
            if self.process is None or self.process.poll() is None:
                return False
            code = self.process.returncode
            self.deaths["crash hook (exit 137)" if code == 137 else f"exit {code}"] += 1
            self.process = None
            return True

    def kill(self, cause: str) -> bool:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                return False
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
            self.deaths[cause] += 1
            return True

    def stop(self) -> None:
        with self.lock:
            if self.process is None:
                return
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.process = None

    def fired_hooks(self) -> Counter[str]:
        """Which crash hooks fired, from the operator's log."""
        if not self.log.exists():
            return Counter()
        text = self.log.read_text(errors="replace")
        return Counter(re.findall(r"test hook: crashing at (\S+)", text))

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Supervisor(threading.Thread):
    """Keeps the operator running, and kills it: at random (exponential gaps) and when aimed
    (`aim(delay)`), never within `min_uptime_s` of its start; paused while the apiserver is
    down."""

    def __init__(
        self,
        operator: ChaosOperator,
        rng: random.Random,
        *,
        random_kill_mean_s: float,
        min_uptime_s: float = 1.0,
    ) -> None:
        super().__init__(name="chaos-supervisor", daemon=True)
        self.operator, self.rng = operator, rng
        self.mean, self.min_uptime = random_kill_mean_s, min_uptime_s
        self.lock = threading.Lock()
        self.aimed: list[float] = []
        self.stopping = threading.Event()
        self.kills_enabled = threading.Event()
        self.kills_enabled.set()
        self.paused = threading.Event()
        self.skipped = 0
        self.restart_errors = 0
        self.next_random = time.monotonic() + self.rng.expovariate(1 / self.mean)

    def aim(self, delay: float) -> None:
        with self.lock:
            self.aimed.append(time.monotonic() + delay)

    def _due(self, now: float) -> str | None:
        with self.lock:
            due = [t for t in self.aimed if t <= now]
            self.aimed = [t for t in self.aimed if t > now]
        if now >= self.next_random:
            self.next_random = now + self.rng.expovariate(1 / self.mean)
            return "SIGKILL at random"
        return "SIGKILL aimed after an event" if due else None

    def _restart(self) -> None:
        try:
            self.operator.start()
        except Exception:  # the apiserver is restarting: try again
            self.restart_errors += 1
            time.sleep(0.5)

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            if self.paused.is_set():
                continue
            now = time.monotonic()
            if self.operator.process is None or self.operator.reap():
                self._restart()
                continue
            cause = self._due(now)
            if cause is None or not self.kills_enabled.is_set():
                continue
            if self.operator.uptime() < self.min_uptime:
                self.skipped += 1
                continue
            if self.operator.kill(cause):
                self._restart()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def restart_apiserver(
    cluster: LocalCluster, *, grace_s: float = 3.0, down_s: float = 1.0, timeout_s: float = 120
) -> float:
    """Stop the kube-apiserver (TERM, then KILL after `grace_s`: its graceful shutdown waits up
    to a minute for open requests), leave it down `down_s`, start it again through the
    cluster's own process management (pid file and log as before) and wait until it is ready;
    the seconds it was away."""
    component = next(c for c in cluster.processes() if c.name == "kube-apiserver")
    pid = running_pid(cluster.layout, component.name)
    stopped = time.monotonic()
    if pid is not None:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while running_pid(cluster.layout, component.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(cluster.layout, component.name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while running_pid(cluster.layout, component.name):
                time.sleep(0.05)
    time.sleep(down_s)
    cluster.start_process(component)
    deadline = time.monotonic() + timeout_s
    while not is_healthy(cluster.layout, component):
        if time.monotonic() > deadline:
            raise RuntimeError("the apiserver did not come back")
        time.sleep(0.1)
    return time.monotonic() - stopped


def garbage_collector_seconds(api: Any, namespace: str, timeout_s: float = 20.0) -> float:
    """How long the garbage collector takes to delete the dependent of a deleted owner (a
    ConfigMap owned by a ConfigMap); infinity when not within `timeout_s`."""
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gc-probe-"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name=owner.metadata.name, uid=owner.metadata.uid
    )
    dependent = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(generate_name="gc-probe-", owner_references=[reference])
        ),
    )
    started = time.monotonic()
    core.delete_namespaced_config_map(
        owner.metadata.name, namespace, propagation_policy="Background"
    )
    while time.monotonic() - started < timeout_s:
        try:
            core.read_namespaced_config_map(dependent.metadata.name, namespace)
        except ApiException as error:
            if error.status == 404:
                return time.monotonic() - started
            raise
        time.sleep(0.2)
    return float("inf")


def wait_for_garbage_collector(api: Any, namespace: str, wait_s: float) -> None:
    """Wait (up to `wait_s`) until the garbage collector deletes a dependent within 5 s.

    It deletes the pods of the attempt Jobs the operator deletes (background propagation), and
    the operator starts no attempt, and a suspended job reports no stopped workers, while such
    a pod lives. Right after a run that left thousands of objects to collect (the 2,000-job
    benchmark) it lags by minutes, and every job here would wait that long."""
    deadline = time.monotonic() + wait_s
    while (took := garbage_collector_seconds(api, namespace)) > 5:
        print(f"the garbage collector took {took:.1f} s to delete a dependent: waiting")
        if time.monotonic() > deadline:
            return
        time.sleep(10)


# ------------------------------------------------------------------------------------------------
# Injecting events


def finish_pod(core: Any, namespace: str, pod: str, code: int, reason: str | None = None) -> None:
    annotations = nodes.finish_annotations(exit_code=code, reason=reason)
    core.patch_namespaced_pod(
        pod, namespace, {"metadata": {"annotations": annotations}}, _request_timeout=TIMEOUT
    )


def write_divergence(
    core: Any, namespace: str, kind: str, job: str, attempt: int, step: int
) -> None:
    """What the trainer leaves in the report ConfigMap when it sees a loss spike."""
    selector = f"{REPORT_LABEL}=true,{JOB_LABEL}={job},{KIND_LABEL}={kind}"
    found = core.list_namespaced_config_map(
        namespace, label_selector=selector, _request_timeout=TIMEOUT
    ).items
    if len(found) != 1:
        raise LookupError(f"{len(found)} report ConfigMaps for {kind} {job}")
    result = {
        "outcome": "diverged",
        "attempt": attempt,
        "divergence": {"step": step, "loss": 9.75, "rule": "spike"},
    }
    core.patch_namespaced_config_map(
        found[0].metadata.name,
        namespace,
        {"data": {"result.json": json.dumps(result)}},
        _request_timeout=TIMEOUT,
    )


def patch_job(custom: Any, namespace: str, name: str, body: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "llmtrainingjobs", name, body, _request_timeout=TIMEOUT
    )


# ------------------------------------------------------------------------------------------------
# Lifecycles: a script of events per job, and the outcome it implies

# fail: a worker exits 1; oom: 137 OOMKilled; diverge: the trainer reports a loss spike and exits
# 10; rollback: trainkube.io/rollback-to=STEP; suspend: spec.suspend true until Suspended and no
# live pods, then false again. Endings: succeed (exit 0), delete, suspend-delete (delete while
# suspended).
STEPS = ("fail", "oom", "diverge", "rollback", "suspend")
STEP_WEIGHTS = (3, 2, 2, 2, 2)


@dataclass
class Expectation:
    """What a job's injected history implies: counts, attempts and how it ends.

    Restarts (failures and OOM kills) spend failurePolicy.maxRestarts; an OOM kill with no
    smaller plan fails the job OutOfMemory; divergence spends rollback.maxRollbacks and never a
    restart; a manual rollback counts as a rollback (against maxRollbacks only when
    `manual_rollbacks_limited`); a suspension ends the running attempt and the resume starts the
    next; a finished job gets no other attempt.
    """

    max_restarts: int
    max_rollbacks: int
    oom_escalates: bool
    manual_rollbacks_limited: bool = False
    restarts: int = 0
    rollbacks: int = 0
    attempts: int = 1
    end: str | None = None

    def apply(self, step: str) -> None:
        if self.end is not None:
            raise ValueError(f"{step} after the end ({self.end})")
        if step in ("fail", "oom"):
            self._restart(oom=step == "oom")
        elif step == "diverge" or (step == "rollback" and self.manual_rollbacks_limited):
            self._rollback()
        elif step in ("rollback", "suspend"):
            self.rollbacks += step == "rollback"
            self.attempts += 1
        else:
            self.end = {
                "succeed": "Succeeded/Completed",
                "delete": "Deleted",
                "suspend-delete": "Deleted",
            }[step]

    def _restart(self, *, oom: bool) -> None:
        if self.restarts >= self.max_restarts:
            self.end = "Failed/RestartsExhausted"
        elif oom and not self.oom_escalates:
            self.end = "Failed/OutOfMemory"
        else:
            self.restarts += 1
            self.attempts += 1

    def _rollback(self) -> None:
        if self.rollbacks >= self.max_rollbacks:
            self.end = "Failed/RollbacksExhausted"
        else:
            self.rollbacks += 1
            self.attempts += 1


def training_job(
    name: str, *, max_restarts: int, max_rollbacks: int, tight: bool
) -> dict[str, Any]:
    """A 1 node x 1 GPU pre-training job. `tight` pins the plan to the top of the memory ladder
    the cluster offers (ZeRO-3, CPU offload, recomputation, micro-batch 1), so an OOM kill has no
    smaller plan to escalate to; otherwise the planner has many steps to go."""
    spec: dict[str, Any] = {
        "failurePolicy": {"maxRestarts": max_restarts, "backoffSeconds": 0},
        "rollback": {"maxRollbacks": max_rollbacks, "stepsBack": 10, "lrFactor": 0.5},
    }
    if tight:
        spec["parallelism"] = {
            "zeroStage": 3,
            "offloadOptimizer": "cpu",
            "offloadParameters": "cpu",
            "activationCheckpointing": "enabled",
            "microBatchSize": 1,
        }
    return _training_job(name, nodes_=1, gpus=1, **spec)


@dataclass
class Lifecycle:
    name: str
    manifest: dict[str, Any]
    steps: list[str]
    expect: Expectation
    ends: list[str | None]  # the expected end after each step (None: still running)
    hasty_delete: bool = False  # the final delete lands 0-1.5 s after the step before it
    poke: bool = False  # once finished, its batch Jobs are deleted under it
    position: int = 0
    state: str = "create"
    want: str = ""
    deadline: float = 0.0
    ready_at: float = 0.0
    attempt: int = 0  # the attempt whose running pod the driver last saw
    pod: str = ""
    observed: str | None = None
    stuck: str | None = None
    notes: list[str] = field(default_factory=list)
    errors: int = 0
    rollback_value: int = 100
    awaiting_since: float = 0.0

    @property
    def key(self) -> str:
        return f"LLMTrainingJob/{self.name}"


def plan_lifecycle(rng: random.Random, name: str, *, manual_rollbacks_limited: bool) -> Lifecycle:
    """One job's script, drawn from `rng`, and what it implies."""
    tight = rng.random() < 0.15
    expect = Expectation(
        max_restarts=rng.choice((1, 2, 3)),
        max_rollbacks=rng.choice((0, 1, 2)),
        oom_escalates=not tight,
        manual_rollbacks_limited=manual_rollbacks_limited,
    )
    manifest = training_job(
        name, max_restarts=expect.max_restarts, max_rollbacks=expect.max_rollbacks, tight=tight
    )
    steps = [
        rng.choices(STEPS, weights=STEP_WEIGHTS)[0] for _ in range(rng.choice((1, 2, 3, 4, 5)))
    ]
    ending = rng.choices(("succeed", "delete", "suspend-delete", "exhaust"), weights=(6, 2, 1, 1))
    steps += ["fail"] * 8 if ending[0] == "exhaust" else ending
    ends: list[str | None] = []
    for step in steps:
        expect.apply(step)
        ends.append(expect.end)
        if expect.end is not None:
            break
    steps = steps[: len(ends)]
    return Lifecycle(
        name=name,
        manifest=manifest,
        steps=steps,
        expect=expect,
        ends=ends,
        hasty_delete=steps[-1] == "delete" and len(steps) > 1 and rng.random() < 0.5,
        poke=expect.end != "Deleted" and rng.random() < 0.3,
    )


def plan_lifecycles(
    rng: random.Random, count: int, *, prefix: str = "chaos", manual_rollbacks_limited: bool
) -> list[Lifecycle]:
    return [
        plan_lifecycle(
            rng, f"{prefix}-{index:03d}", manual_rollbacks_limited=manual_rollbacks_limited
        )
        for index in range(count)
    ]


# ------------------------------------------------------------------------------------------------
# The driver


@dataclass
class Snapshot:
    jobs: dict[str, dict[str, Any]]
    pods: dict[str, list[dict[str, Any]]]


class Driver:
    """Runs the lifecycles, `concurrency` at a time: injects each step once the job is settled
    (its newest attempt's pod Running and status Running), waits for the outcome the step
    implies, and marks a job stuck when that does not come within `settle_timeout_s`."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        rng: random.Random,
        lifecycles: list[Lifecycle],
        supervisor: Supervisor | None,
        *,
        concurrency: int,
        aim_probability: float,
        settle_timeout_s: float = 90.0,
        apiserver_restart: Callable[[], float] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.core, self.batch = client.CoreV1Api(api), client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.rng, self.lifecycles = namespace, rng, lifecycles
        self.supervisor, self.concurrency = supervisor, concurrency
        self.aim_probability, self.settle_timeout = aim_probability, settle_timeout_s
        self.apiserver_restart, self.log = apiserver_restart, log
        self.injected: Counter[str] = Counter()
        self.aimed = 0
        self.apiserver_down_s: list[float] = []
        self.snapshot_overlaps: dict[str, list[str]] = defaultdict(list)
        self.snapshot_errors = 0
        self.settle_s: list[float] = []  # from each step to the state it implies
        self.origin = time.monotonic()

    # -- reading

    def _snapshot(self) -> Snapshot:
        jobs = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "llmtrainingjobs", _request_timeout=TIMEOUT
        )["items"]
        pods, _ = raw_items(
            self.core.list_namespaced_pod(
                self.namespace,
                label_selector=JOB_LABEL,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in pods:
            by_job[pod["metadata"]["labels"][JOB_LABEL]].append(pod)
        for name, found in by_job.items():
            live = sorted({attempt_of(p) for p in found if pod_alive(p)})
            if len(live) > 1:
                when = time.monotonic() - self.origin
                self.snapshot_overlaps[f"LLMTrainingJob/{name}"].append(
                    f"{when:.2f}: listed pods of attempts {live} alive at once"
                )
        return Snapshot({j["metadata"]["name"]: j for j in jobs}, by_job)

    # -- acting

    def _aim(self) -> None:
        if self.supervisor is not None and self.rng.random() < self.aim_probability:
            self.supervisor.aim(self.rng.uniform(0.0, 3.0))
            self.aimed += 1

    def _settled(self, lc: Lifecycle, now: float) -> None:
        """The awaited state came: how long after the step that asked for it."""
        if lc.awaiting_since:
            self.settle_s.append(now - lc.awaiting_since)
            lc.awaiting_since = 0.0

    def _finish_lifecycle(self, lc: Lifecycle, observed: str) -> None:
        if observed != "Stuck":
            self._settled(lc, time.monotonic())
        lc.observed = observed
        if lc.poke and observed.startswith(TERMINAL_TYPES):
            lc.state = "poke"
        else:
            lc.state = "done"

    def _await(self, lc: Lifecycle, want: str, now: float) -> None:
        lc.state, lc.want, lc.deadline = "await", want, now + self.settle_timeout
        lc.awaiting_since = now

    def _inject(self, lc: Lifecycle, now: float) -> None:
        step = lc.steps[lc.position]
        want = "terminal" if lc.ends[lc.position] else "running"
        namespace, name = self.namespace, lc.name
        if step == "fail":
            finish_pod(self.core, namespace, lc.pod, 1)
        elif step == "oom":
            finish_pod(self.core, namespace, lc.pod, 137, "OOMKilled")
        elif step == "diverge":
            at = self.rng.randrange(50, 900)
            write_divergence(self.core, namespace, "LLMTrainingJob", name, lc.attempt, at)
            finish_pod(self.core, namespace, lc.pod, 10)
        elif step == "rollback":
            annotations = {ROLLBACK_ANNOTATION: str(lc.rollback_value)}
            patch_job(self.custom, namespace, name, {"metadata": {"annotations": annotations}})
            lc.rollback_value += 1
        elif step in ("suspend", "suspend-delete"):
            patch_job(self.custom, namespace, name, {"spec": {"suspend": True}})
            want = "suspended"
        elif step == "succeed":
            finish_pod(self.core, namespace, lc.pod, 0)
        elif step == "delete":
            self._delete(lc)
            want = "gone"
        lc.position += 1
        self.injected[step] += 1
        self._aim()
        last = lc.position == len(lc.steps) - 1
        if last and lc.hasty_delete:
            lc.state, lc.ready_at = "ready", now + self.rng.uniform(0.0, 1.5)
        else:
            self._await(lc, want, now)

    def _delete(self, lc: Lifecycle) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "llmtrainingjobs", lc.name, _request_timeout=TIMEOUT
            )

    def _poke(self, lc: Lifecycle) -> None:
        """Delete a finished job's batch Jobs: it must not get another attempt."""
        selector = f"{JOB_LABEL}={lc.name},{COMPONENT_LABEL}=worker"
        for job in self.batch.list_namespaced_job(
            self.namespace, label_selector=selector, _request_timeout=TIMEOUT
        ).items:
            with contextlib.suppress(ApiException):
                self.batch.delete_namespaced_job(
                    job.metadata.name,
                    self.namespace,
                    propagation_policy="Background",
                    _request_timeout=TIMEOUT,
                )
        self.injected["delete batch Job of a finished job"] += 1
        self._aim()
        lc.state = "done"

    def _settle(self, lc: Lifecycle, snap: Snapshot, now: float) -> None:
        obj, pods = snap.jobs.get(lc.name), snap.pods.get(lc.name, [])
        live = [p for p in pods if pod_alive(p)]
        if lc.want == "gone":
            if obj is None and not live:
                self._finish_lifecycle(lc, "Deleted")
            return
        if obj is None:
            lc.notes.append(f"the job vanished while waiting for {lc.want}")
            self._finish_lifecycle(lc, "Vanished")
            return
        end = terminal_state(obj)
        if end is not None and not (lc.want == "suspended" and live):
            self._finish_lifecycle(lc, end)
            return
        if lc.want == "suspended":
            if is_true(obj, "Suspended") and not live:
                self._settled(lc, now)
                lc.state, lc.ready_at = "hold", now + self.rng.uniform(0.2, 2.0)
            return
        running = [
            p
            for p in live
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and attempt_of(p) > lc.attempt
        ]
        if running and len({attempt_of(p) for p in live}) == 1 and is_true(obj, "Running"):
            newest = running[0]
            if lc.want == "terminal":  # the model says it ends; the operator started another
                lc.notes.append(f"expected it to end, but attempt {attempt_of(newest)} runs")
                self._finish_lifecycle(lc, f"Running/attempt {attempt_of(newest)}")
                return
            lc.attempt, lc.pod = attempt_of(newest), newest["metadata"]["name"]
            self._settled(lc, now)
            lc.state, lc.ready_at = "ready", now + self.rng.uniform(0.1, 1.0)

    def _blocking(self, lc: Lifecycle, snap: Snapshot) -> str:
        """What a stuck job's live pods are: of which attempt, and whether their batch Job is
        still there (a pod whose Job is gone waits for the garbage collector)."""
        selector = f"{JOB_LABEL}={lc.name},{COMPONENT_LABEL}=worker"
        jobs = self.batch.list_namespaced_job(
            self.namespace, label_selector=selector, _request_timeout=TIMEOUT
        ).items
        names = {j.metadata.name for j in jobs}
        live = []
        for pod in snap.pods.get(lc.name, []):
            if pod_alive(pod):
                owner = pod["metadata"]["labels"].get("batch.kubernetes.io/job-name")
                phase = (pod.get("status") or {}).get("phase")
                there = "there" if owner in names else "gone"
                live.append(f"{pod['metadata']['name']} ({phase}, batch Job {there})")
        return f"live pods: {live or 'none'}; batch Jobs: {sorted(names) or 'none'}"

    def _step(self, lc: Lifecycle, snap: Snapshot, now: float) -> None:
        if lc.state == "create":
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    "llmtrainingjobs",
                    lc.manifest,
                    _request_timeout=TIMEOUT,
                )
            except ApiException as error:
                if error.status != 409:
                    raise
            self._await(lc, "running", now)
        elif lc.state == "await":
            self._settle(lc, snap, now)
            if lc.state == "await" and now > lc.deadline:
                lc.stuck = (
                    f"waited {self.settle_timeout:.0f} s for {lc.want} after step "
                    f"{lc.position} ({(['create', *lc.steps])[lc.position]}); "
                    f"{self._blocking(lc, snap)}"
                )
                self._finish_lifecycle(lc, "Stuck")
                lc.state = "done"
        elif lc.state == "ready" and now >= lc.ready_at:
            self._inject(lc, now)
        elif lc.state == "hold" and now >= lc.ready_at:
            if lc.steps[lc.position - 1] == "suspend-delete":
                self._delete(lc)
                self.injected["delete"] += 1
                self._aim()
                self._await(lc, "gone", now)
            else:
                patch_job(self.custom, self.namespace, lc.name, {"spec": {"suspend": False}})
                self.injected["resume"] += 1
                self._aim()
                self._await(lc, "running", now)
        elif lc.state == "poke":
            self._poke(lc)

    def _restart_apiserver(self, active: list[Lifecycle]) -> None:
        assert self.apiserver_restart is not None
        if self.supervisor is not None:
            self.supervisor.paused.set()
        try:
            down = self.apiserver_restart()
        finally:
            if self.supervisor is not None:
                self.supervisor.paused.clear()
        self.apiserver_down_s.append(down)
        for lc in active:  # the time it was away is not the operator's
            lc.deadline += down + 10
        self.log(f"apiserver restarted ({down:.1f} s down)")

    def run(self, *, deadline_s: float) -> None:
        pending, active = list(self.lifecycles), list[Lifecycle]()
        restart_at = len(pending) // 2 if self.apiserver_restart else -1
        end = time.monotonic() + deadline_s
        last_report = 0.0
        while pending or active:
            now = time.monotonic()
            if now > end:
                for lc in active:
                    lc.stuck = lc.stuck or f"still {lc.state} {lc.want} when the run's time was up"
                    lc.state = "done"
                return
            finished = len(self.lifecycles) - len(pending) - len(active)
            if 0 <= restart_at <= finished and not self.apiserver_down_s:
                self._restart_apiserver(active)
            try:
                snap = self._snapshot()
            except Exception:
                self.snapshot_errors += 1
                time.sleep(0.5)
                continue
            while pending and len(active) < self.concurrency:
                active.append(pending.pop(0))
            for lc in list(active):
                try:
                    self._step(lc, snap, now)
                    lc.errors = 0
                except Exception as error:  # retried next tick; idempotent steps
                    lc.errors += 1
                    if lc.errors in (1, 20):
                        lc.notes.append(f"{lc.state}: {type(error).__name__}: {error}"[:300])
                    if lc.errors >= 60:
                        lc.stuck = f"could not act ({lc.state}) for 60 tries: {lc.notes[-1]}"
                        lc.state = "done"
                if lc.state == "done":
                    active.remove(lc)
            if now - last_report > 30:
                last_report = now
                self.log(
                    f"{now - self.origin:6.0f} s: {finished} lifecycles done, {len(active)} active"
                )
            time.sleep(0.25)


# ------------------------------------------------------------------------------------------------
# Checking, from the apiserver and the watches

OVERLAP = "two attempts' pods alive at once"
DUPLICATE = "duplicate attempt numbers"
STUCK = "stuck (no terminal state in time)"
RESTARTS = "restarts not counted exactly once"
ROLLBACKS = "rollbacks not counted exactly once"
ATTEMPTS = "attempts not as implied (numbering or count)"
TERMINAL = "terminal state not as implied"
AFTER_END = "attempt created for a finished job"
LEFT_RUNNING = "pods alive after the end"
SUSPEND_UNDONE = "suspend undone"
INVARIANTS = (
    OVERLAP,
    DUPLICATE,
    STUCK,
    RESTARTS,
    ROLLBACKS,
    ATTEMPTS,
    TERMINAL,
    AFTER_END,
    LEFT_RUNNING,
    SUSPEND_UNDONE,
)


@dataclass
class Verdict:
    problems: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {name: {} for name in INVARIANTS}
    )
    outcomes: Counter[str] = field(default_factory=Counter)
    children_after_deletion: int = 0

    def add(self, invariant: str, key: str, text: str) -> None:
        self.problems[invariant].setdefault(key, []).append(text)

    def jobs(self, invariant: str) -> int:
        return len(self.problems[invariant])

    def failing_jobs(self) -> list[str]:
        return sorted({key for found in self.problems.values() for key in found})


def attempt_numbering(numbers: list[int], *, window: int = 20) -> str | None:
    """Why a status.attempts numbering is wrong: duplicates, gaps, not from 1 (unless the list
    is a full window of the newest), or None."""
    if len(set(numbers)) != len(numbers):
        return f"duplicate numbers in status.attempts {numbers}"
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))) if numbers else False:
        return f"status.attempts {numbers} are not consecutive"
    if numbers and numbers[0] != 1 and len(numbers) < window:
        return f"status.attempts {numbers} do not start at 1"
    return None


def check_recorded(
    verdict: Verdict, key: str, recorders: Recorders, listed: dict[str, list[str]]
) -> None:
    """What the watches (and the driver's listings) saw while it ran: overlapping attempts,
    an attempt number with two batch Jobs, a suspension undone."""
    for text in recorders.pods.overlaps.get(key, []) + listed.get(key, []):
        verdict.add(OVERLAP, key, text)
    duplicates = recorders.jobs.duplicates(key)
    if duplicates:
        verdict.add(DUPLICATE, key, f"attempts {duplicates} had more than one batch Job")
    for text in recorders.statuses.unsuspended.get(key, []):
        verdict.add(SUSPEND_UNDONE, key, text)


def _check_status(
    verdict: Verdict, lc: Lifecycle, obj: dict[str, Any], recorders: Recorders
) -> None:
    """Counts, attempt numbering, and no attempt after the end, for a job that still exists."""
    key, expect = lc.key, lc.expect
    status = obj.get("status") or {}
    restarts, rollbacks = counts(status)
    if restarts != expect.restarts:
        verdict.add(RESTARTS, key, f"status says {restarts}, injected {expect.restarts}")
    if rollbacks != expect.rollbacks:
        verdict.add(ROLLBACKS, key, f"status says {rollbacks}, injected {expect.rollbacks}")
    numbers = [int(a.get("number", 0)) for a in status.get("attempts") or []]
    wrong = attempt_numbering(numbers)
    if wrong and "duplicate" in wrong:
        verdict.add(DUPLICATE, key, wrong)
    elif wrong:
        verdict.add(ATTEMPTS, key, wrong)
    if numbers and max(numbers) != expect.attempts:
        verdict.add(ATTEMPTS, key, f"{max(numbers)} attempts, expected {expect.attempts}")
    last = max(numbers, default=0)
    with recorders.jobs.lock:
        made = sorted(a for (k, a) in recorders.jobs.uids if k == key)
    if any(a > last for a in made):
        verdict.add(AFTER_END, key, f"batch Jobs of attempts {made}, status ends at {last}")
    finished = recorders.statuses.terminal_at.get(key)
    if finished is not None and recorders.jobs.created_after(key, finished):
        after = recorders.jobs.created_after(key, finished)
        verdict.add(AFTER_END, key, f"batch Jobs of attempts {after} created after it ended")


def verify(
    api: Any, namespace: str, lifecycles: list[Lifecycle], recorders: Recorders, driver: Driver
) -> Verdict:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    verdict = Verdict()
    pods, _ = raw_items(
        core.list_namespaced_pod(namespace, label_selector=JOB_LABEL, _preload_content=False)
    )
    alive: dict[str, list[str]] = defaultdict(list)
    for pod in pods:
        if pod_alive(pod):
            alive[owner_key(pod)].append(f"{pod['metadata']['name']} (a{attempt_of(pod)})")
    for lc in lifecycles:
        key, expect = lc.key, lc.expect
        try:
            obj: dict[str, Any] | None = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "llmtrainingjobs", lc.name
            )
        except ApiException as error:
            if error.status != 404:
                raise
            obj = None
        check_recorded(verdict, key, recorders, driver.snapshot_overlaps)
        actual = "Deleted" if obj is None else terminal_state(obj) or f"not finished: {lc.observed}"
        verdict.outcomes[actual] += 1
        if lc.stuck:  # the rest of its script never ran: nothing else to compare
            verdict.add(STUCK, key, lc.stuck)
            continue
        if actual != expect.end:
            verdict.add(TERMINAL, key, f"expected {expect.end}, found {actual}")
        if alive.get(key):
            verdict.add(LEFT_RUNNING, key, f"alive at the end: {alive[key]}")
        if obj is None:
            deleted_at = recorders.statuses.deleted_at.get(key)
            if deleted_at is not None and recorders.jobs.created_after(key, deleted_at):
                verdict.children_after_deletion += 1
            continue
        _check_status(verdict, lc, obj, recorders)
    return verdict


def describe(
    lifecycles: list[Lifecycle], verdict: Verdict, recorders: Recorders, *, limit: int = 6
) -> str:
    """The failing jobs: script, what it implies, what was found, and what the watches saw."""
    by_key = {lc.key: lc for lc in lifecycles}
    parts = []
    for key in verdict.failing_jobs()[:limit]:
        lc = by_key.get(key)
        found = [
            f"  {name}: {'; '.join(texts)}"
            for name, jobs in verdict.problems.items()
            for k, texts in jobs.items()
            if k == key
        ]
        header = f"{key}"
        if lc is not None:
            e = lc.expect
            header += (
                f": steps {lc.steps}{' (hasty delete)' if lc.hasty_delete else ''}"
                f"{' (+ batch Jobs deleted after the end)' if lc.poke else ''}; maxRestarts "
                f"{e.max_restarts}, maxRollbacks {e.max_rollbacks}, OOM escalates "
                f"{e.oom_escalates}; implies {e.end}, restarts {e.restarts}, rollbacks "
                f"{e.rollbacks}, attempts {e.attempts}; driver saw {lc.observed}"
                f"{'; notes: ' + ' | '.join(lc.notes) if lc.notes else ''}"
            )
        parts.append("\n".join([header, *found, "  history:", recorders.story(key)]))
    more = len(verdict.failing_jobs()) - limit
    if more > 0:
        parts.append(f"... and {more} more jobs")
    return "\n\n".join(parts)
