"""Benchmark: how fast a job recovers (issue 13's "Done when"), with the real operator process
and real training of the tiny model on the local cluster's real CPU node, 2 workers.

    flock /tmp/trainkube-cluster.lock .venv/bin/python -m tests.benchmarks.recovery_latency

Jobs one after the other (the machine has 2 cores: nothing else of ours runs meanwhile):
`--repeats` (3) of each spike job, alternating, then the story.

- **In place** (`rollback.inProcess: true`, the default): a loss spike from step 25 (as
  below) rolled back by the workers: spike detected -> the `rolledBack` event (checkpoint
  chosen and verified, later ones moved aside, loaded into the live engine, learning rate
  lowered), and its checkpoint load.
- **Pod restart** (`rollback.inProcess: false`): a loss spike injected from step 25
  (`trainkube.io/fault`); the trainer detects it at step 26 and exits; the operator starts
  attempt 2 from checkpoint step-10. Measured: spike detected (the trainer's `diverged` event)
  -> training resumed (attempt 2's `resumed` event: its pods scheduled and started, the trainer
  up, the checkpoint loaded), with the operator's steps in between from status.
- **The story** (`rollback.inProcess: true`, the default): the same spike, rolled back in place
  (spike detected -> the `rolledBack` event: checkpoint chosen, later ones moved aside, loaded
  into the live engine, learning rate lowered; and its checkpoint load alone); then one rank
  blocks forever before step 45 (`hangAtStep`, `failurePolicy.hangTimeoutSeconds` 15): hang
  detected (the operator ends attempt 1 as Hung) against the last step's end, which must be
  within the timeout + 1 reconcile (rank 0's heartbeat sends the report proving the stall as
  soon as the limit has passed); then, once
  attempt 2 has trained to step 50, its last worker is evicted through the eviction API, and
  attempt 3 finishes the run. Its `kubectl describe` (each of the three, in order, and
  goodput) is printed and written beside the results.

The trainer's events carry `at` (epoch seconds, ms); the benchmark reads them from the job's
report ConfigMap, polled every 0.2 s (so attempt 1's events are seen before attempt 2 replaces
them), and status the same way. Prints the numbers and writes
tests/benchmarks/results/recovery-latency.json (and recovery-describe.txt).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tests.cluster.conftest import OperatorProcess, apply_manifests
from tests.cluster.test_recovery import _real_job
from tests.localcluster.cluster import LocalCluster, stop_helpers
from tests.localcluster.demo import load_images
from trainkube import timestamps
from trainkube.api import KINDS
from trainkube.controller import hang, naming

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
KIND = "LLMTrainingJob"
HANG_TIMEOUT = 15


def _manifest(name: str, *, in_process: bool, fault: dict[str, Any], steps: int) -> Any:
    """The real-node spike job of tests/cluster/test_recovery.py, with this run's steps, fault,
    rollback budget, in-process choice and hang timeout."""
    manifest = _real_job(name, annotations={"trainkube.io/fault": json.dumps(fault)})
    spec = manifest["spec"]
    spec["training"]["maxSteps"] = steps
    spec["rollback"].update(maxRollbacks=2, inProcess=in_process)
    spec["failurePolicy"]["hangTimeoutSeconds"] = HANG_TIMEOUT
    return manifest


class Watch:
    """Polls one job's report ConfigMap and status every 0.2 s from a thread, keeping every
    trainer event it sees (by attempt) and when each status change was first seen."""

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.events: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.seen: dict[str, float] = {}  # what -> epoch seconds it was first seen
        self.last_step_at: dict[int, str] = {}  # attempt -> the last lastStepAt reported
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        report = naming.report_name(KIND, self.name)
        try:
            data = self.core.read_namespaced_config_map(report, self.namespace).data or {}
        except client.ApiException:
            data = {}
        for key in ("progress.json", "result.json"):
            document = json.loads(data[key]) if key in data else {}
            if key == "progress.json" and document.get("lastStepAt"):
                self.last_step_at[document["attempt"]] = document["lastStepAt"]
            for event in document.get("events", []):
                found = (document.get("attempt"), event.get("type"), event.get("time"))
                self.events.setdefault((*found, event.get("step")), {**event, "attempt": found[0]})
        try:
            job = self.custom.get_namespaced_custom_object(
                "trainkube.io", "v1alpha1", self.namespace, "llmtrainingjobs", self.name
            )
        except client.ApiException as error:
            if error.status == 404:  # not applied yet
                return
            raise
        self.status = job.get("status") or {}
        now = time.time()
        for attempt in self.status.get("attempts") or []:
            if attempt.get("reason"):
                self.seen.setdefault(f"attempt{attempt['number']}:{attempt['reason']}", now)
        for index, _ in enumerate(self.status.get("rollbacks") or []):
            self.seen.setdefault(f"rollback{index + 1}:recorded", now)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._poll()
            except Exception as error:  # keep watching through an apiserver hiccup
                print("watch:", error, file=sys.stderr)
            time.sleep(0.2)

    def of(self, kind: str, attempt: int | None = None) -> list[dict[str, Any]]:
        found = [
            e
            for e in self.events.values()
            if e.get("type") == kind and (attempt is None or e.get("attempt") == attempt)
        ]
        return sorted(found, key=lambda e: e.get("at") or 0)

    def wait(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: waited {timeout} s; status {json.dumps(self.status)}")

    def finished(self) -> bool:
        return self.status.get("phase") in ("Succeeded", "Failed")


def _attempt(status: dict[str, Any], number: int) -> dict[str, Any]:
    return next(a for a in status.get("attempts", []) if a["number"] == number)


def _span(start: str | None, end: str | None) -> float | None:
    return timestamps.epoch(end) - timestamps.epoch(start) if start and end else None


def in_place(cluster: LocalCluster, api: Any, namespace: str, index: int) -> dict[str, Any]:
    """A spike rolled back in place: detected -> the trainer's rolledBack event."""
    name = f"spike-in-place-{index}"
    manifest = _manifest(name, in_process=True, fault={"spikeAtStep": 25}, steps=40)
    watch = Watch(api, namespace, name)
    watch.thread.start()
    apply_manifests(cluster, namespace, manifest)
    watch.wait(watch.finished, 600)
    watch.stop.set()
    [diverged] = watch.of("diverged", 1)
    [rolled] = watch.of("rolledBack", 1)
    return {
        "phase": watch.status["phase"],
        "attempts": len(watch.status["attempts"]),
        "detectedAtStep": diverged["step"],
        "fromCheckpointStep": rolled["fromCheckpointStep"],
        "spikeDetectedToResumedSeconds": round(rolled["at"] - diverged["at"], 3),
        "checkpointLoadSeconds": rolled.get("loadSeconds"),
        "recordedInStatusAfterSeconds": round(watch.seen["rollback1:recorded"] - diverged["at"], 1),
    }


def pod_restart(cluster: LocalCluster, api: Any, namespace: str, index: int) -> dict[str, Any]:
    """A spike rolled back by restarting the pods: detected -> attempt 2's resumed event."""
    name = f"spike-restart-{index}"
    manifest = _manifest(name, in_process=False, fault={"spikeAtStep": 25}, steps=40)
    watch = Watch(api, namespace, name)
    watch.thread.start()
    apply_manifests(cluster, namespace, manifest)
    watch.wait(watch.finished, 600)
    watch.stop.set()
    status = watch.status
    [diverged] = watch.of("diverged", 1)
    [resumed] = watch.of("resumed", 2)
    first, second = _attempt(status, 1), _attempt(status, 2)
    return {
        "phase": status["phase"],
        "detectedAtStep": diverged["step"],
        "resumedFromStep": resumed["step"],
        "spikeDetectedToResumedSeconds": round(resumed["at"] - diverged["at"], 2),
        "operator": {
            "detectedToAttemptEnded": round(timestamps.epoch(first["endTime"]) - diverged["at"], 1),
            "attemptEndedToNextStarted": _span(first["endTime"], second["startTime"]),
            "nextStartedToWorkersRunning": _span(second["startTime"], second["workersStarted"]),
            "workersRunningToResumed": round(
                resumed["at"] - timestamps.epoch(second["workersStarted"]), 1
            ),
            "note": "status times are whole seconds",
        },
    }


def story(cluster: LocalCluster, api: Any, namespace: str) -> tuple[dict[str, Any], str]:
    """Spike (rolled back in place), hang, eviction; the numbers and the describe output."""
    name = "spike-hang-evict"
    manifest = _manifest(
        name, in_process=True, fault={"spikeAtStep": 25, "hangAtStep": 45}, steps=80
    )
    watch = Watch(api, namespace, name)
    watch.thread.start()
    apply_manifests(cluster, namespace, manifest)

    def attempt_two_at_50() -> bool:
        progress = watch.status.get("progress") or {}
        attempts = watch.status.get("attempts") or []
        return len(attempts) == 2 and int(progress.get("step") or 0) >= 50

    watch.wait(attempt_two_at_50, 600)
    core = client.CoreV1Api(api)
    selector = f"batch.kubernetes.io/job-name={naming.attempt_job_name(KIND, name, 2)}"
    pods = sorted(
        p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items
    )
    evicted_at = time.time()
    core.create_namespaced_pod_eviction(
        pods[-1],
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=pods[-1], namespace=namespace)),
    )
    watch.wait(watch.finished, 600)
    watch.stop.set()
    status = watch.status
    [diverged] = watch.of("diverged", 1)
    [rolled] = watch.of("rolledBack", 1)
    hung_at = watch.seen["attempt1:Hung"]
    last_step = timestamps.epoch(watch.last_step_at[1])
    described = cluster.kubectl("describe", "llmtrainingjob", name, "-n", namespace)
    numbers = {
        "phase": status["phase"],
        "attempts": [(a["number"], a.get("reason")) for a in status["attempts"]],
        "inProcessRollback": {
            "detectedAtStep": diverged["step"],
            "fromCheckpointStep": rolled["fromCheckpointStep"],
            "spikeDetectedToResumedSeconds": round(rolled["at"] - diverged["at"], 2),
            "checkpointLoadSeconds": rolled.get("loadSeconds"),
            "rollbackSeconds": rolled.get("seconds"),
            "recordedInStatusAfterSeconds": round(
                watch.seen["rollback1:recorded"] - diverged["at"], 1
            ),
        },
        "hang": {
            "hangTimeoutSeconds": HANG_TIMEOUT,
            # Rank 0's heartbeat reports the stall once the limit has passed (hangrule), and
            # that report proves it; one heartbeat more only if reports stop altogether.
            "allowedSeconds": HANG_TIMEOUT,
            "allowedWithoutReportsSeconds": HANG_TIMEOUT + hang.REPORT_LAG_SECONDS,
            "lastStepEndedToHungSeconds": round(hung_at - last_step, 1),
            "note": "the last step's end is the trainer's lastStepAt (whole seconds, rounded "
            "down), so the figure may be up to 1 s long; Hung is when the benchmark saw it",
        },
        "eviction": {
            "evictedToAttemptEndedSeconds": round(watch.seen["attempt2:Disrupted"] - evicted_at, 1)
            if "attempt2:Disrupted" in watch.seen
            else None,
        },
        "goodput": status.get("goodput"),
    }
    return numbers, described


def _median(samples: list[dict[str, Any]]) -> float:
    return float(statistics.median(float(s["spikeDetectedToResumedSeconds"]) for s in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="spikes of each kind")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    cluster = LocalCluster.prepare()
    brought_up = cluster.up()
    stop_helpers(cluster.layout)
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        cluster.wait_condition("Established", *[f"crd/{kind.crd_name}" for kind in KINDS])
        load_images(cluster, "trainer-cpu")
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core = client.CoreV1Api(api)
        namespace = f"bench-recovery-{os.getpid()}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        time.sleep(2)  # the namespace's default ServiceAccount
        with tempfile.TemporaryDirectory() as tmp:
            operator = OperatorProcess(cluster, Path(tmp) / "operator.log")
            operator.start()
            try:
                restarts, in_places = [], []
                for index in range(args.repeats):  # alternating, one job at a time
                    restarts.append(pod_restart(cluster, api, namespace, index))
                    print("pod restart", json.dumps(restarts[-1]), flush=True)
                    in_places.append(in_place(cluster, api, namespace, index))
                    print("in place", json.dumps(in_places[-1]), flush=True)
                numbers, described = story(cluster, api, namespace)
                print("story", json.dumps(numbers), flush=True)
            finally:
                operator.stop()
        core.delete_namespace(namespace)
    finally:
        if brought_up:
            cluster.down()
    print(described)
    result = {
        "what": "issue 13: spike detected -> training resumed, in-process rollback vs a pod "
        "restart, and hang detected vs hangTimeoutSeconds; tiny model, 2 workers on the local "
        "cluster's real CPU node, real operator process",
        "goals": {
            "inProcessSecondsPlusCheckpointLoad": 5.0,
            "hangDetectedWithin": f"hangTimeoutSeconds ({HANG_TIMEOUT}) + 1 reconcile (rank 0 "
            "sends the report that proves the stall 1 s after the limit; the operator waits "
            f"{hang.REPORT_LAG_SECONDS:g} s more only when reports stop altogether)",
        },
        "date": started.isoformat(timespec="seconds"),
        "gitCommit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work",
        "repeats": args.repeats,
        "podRestart": {"median": _median(restarts), "samples": restarts},
        "inProcess": {"median": _median(in_places), "samples": in_places},
        "story": numbers,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recovery-latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "recovery-describe.txt").write_text(described)
    print(f"wrote {RESULTS / 'recovery-latency.json'}")


if __name__ == "__main__":
    main()
