"""The operator recovers jobs without a person: on fake GPU nodes (KWOK) for out-of-memory,
plain failures and budgets; with real training on the real CPU node for a loss spike (rolled
back in place by the workers, or by restarting the pods) and a worker killed mid-run (resume
from the newest checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.conftest import described
from tests.cluster.test_operator import (
    _apply,
    _condition,
    _finish,
    _job,
    _training_job,
    _wait_condition,
)
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster
from trainkube.runconfig import RunConfig

REPO = Path(__file__).resolve().parents[2]


def _attempt_pods(api: Any, namespace: str, job: str, attempt: int) -> list[Any]:
    selector = f"batch.kubernetes.io/job-name={job}-ltj-a{attempt}"
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _run_config(api: Any, namespace: str, job: str, attempt: int) -> RunConfig:
    config = client.CoreV1Api(api).read_namespaced_config_map(
        f"{job}-ltj-run-a{attempt}", namespace
    )
    return RunConfig.model_validate(json.loads(config.data["run.json"]))


@pytest.mark.usefixtures("operator")
def test_an_oom_killed_worker_gets_a_next_attempt_with_an_escalated_plan(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("oomy"))
    _wait_condition(api_client, namespace, "oomy", "Running")
    before = _job(api_client, namespace, "oomy")["status"]["plan"]
    pods = sorted(_attempt_pods(api_client, namespace, "oomy", 1), key=lambda p: p.metadata.name)
    _finish(api_client, namespace, pods[1], 137, "OOMKilled")

    wait_for(lambda: _attempt_pods(api_client, namespace, "oomy", 2), timeout_s=30)
    status = _job(api_client, namespace, "oomy")["status"]
    assert [a["number"] for a in status["attempts"]] == [1, 2]
    assert status["attempts"][0]["reason"] == "OutOfMemory"
    escalation = status["recovery"]["escalation"]
    assert escalation["microBatchSize"] == before["microBatchSize"] // 2
    run = _run_config(api_client, namespace, "oomy", 2)
    assert run.plan is not None
    assert run.plan.deepspeed["train_micro_batch_size_per_gpu"] == before["microBatchSize"] // 2
    assert run.plan.deepspeed["train_batch_size"] == 64  # the global batch never changes
    _wait_condition(api_client, namespace, "oomy", "Running")
    assert "PlanEscalated" in described(crds, "llmtrainingjob", "oomy", namespace, "PlanEscalated")


@pytest.mark.usefixtures("operator")
def test_failures_restart_the_gang_until_the_budget_is_used(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    manifest = _training_job("flaky", nodes_=1, gpus=1)
    manifest["spec"]["failurePolicy"] = {"maxRestarts": 1, "backoffSeconds": 0}
    _apply(crds, namespace, manifest)
    _wait_condition(api_client, namespace, "flaky", "Running")
    _finish(api_client, namespace, _attempt_pods(api_client, namespace, "flaky", 1)[0], 1)
    wait_for(lambda: _attempt_pods(api_client, namespace, "flaky", 2), timeout_s=30)
    _wait_condition(api_client, namespace, "flaky", "Running")
    # The failed attempt's Job is gone; the new one runs.
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert [j.metadata.name for j in jobs] == ["flaky-ltj-a2"]

    _finish(api_client, namespace, _attempt_pods(api_client, namespace, "flaky", 2)[0], 1)
    failed = _wait_condition(api_client, namespace, "flaky", "Failed")
    assert failed["reason"] == "RestartsExhausted"
    assert "all 1 restarts (failurePolicy.maxRestarts) are used" in failed["message"]


def _finished(api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The job's status once it has succeeded or failed (real training: up to 300 s)."""

    def ended() -> dict[str, Any] | None:
        status: dict[str, Any] = _job(api, namespace, name).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    found: dict[str, Any] = wait_for(ended, timeout_s=300, interval_s=1)
    return found


def _real_job(name: str, **changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(
        (REPO / "examples" / "01-tiny-pretrain-cpu.yaml").read_text()
    )
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["training"].update(maxSteps=60, evalInterval=0, logInterval=5)
    spec["checkpoints"] = {"interval": 10, "keepLast": 10, "createVolume": {"size": "1Gi"}}
    spec["rollback"] = {
        "rule": {"window": 10, "threshold": 6.0, "patience": 2},
        "stepsBack": 10,
        "lrFactor": 0.5,
        "skipBatches": 5,
        "maxRollbacks": 1,
    }
    spec["failurePolicy"] = {"maxRestarts": 2, "backoffSeconds": 0}
    for key, value in changes.items():
        manifest["metadata" if key == "annotations" else "spec"][key] = value
    return manifest


@pytest.mark.usefixtures("operator")
def test_a_loss_spike_rolls_back_in_place_and_the_job_completes_with_the_same_pods(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    manifest = _real_job("spiky", annotations={"trainkube.io/fault": '{"spikeAtStep": 45}'})
    _apply(crds, namespace, manifest)

    def running_pods() -> dict[str, str] | None:
        pods = _attempt_pods(api_client, namespace, "spiky", 1)
        uids = {p.metadata.name: p.metadata.uid for p in pods if p.status.phase == "Running"}
        return uids if len(uids) == 2 else None

    before: dict[str, str] = wait_for(running_pods, timeout_s=180, interval_s=0.5)
    done = _finished(api_client, namespace, "spiky")
    assert done["phase"] == "Succeeded", json.dumps(done.get("conditions"))
    [rollback] = done["rollbacks"]
    assert rollback["inProcess"] is True
    assert rollback["detectedAtStep"] == 46  # batches poisoned from 45, patience 2
    assert rollback["fromCheckpointStep"] == 30  # the newest at least stepsBack (10) before
    assert rollback["skippedBatches"] == 5
    assert rollback["rule"].startswith("spike: ")
    assert done["recovery"]["rollbacks"] == 1
    assert done["recovery"]["learningRateFactor"] == 0.5
    assert done["recovery"]["restarts"] == 0
    # No pod restarted: one attempt, its pods the same (uids) and never restarted.
    [attempt] = done["attempts"]
    assert attempt["inProcessRollbacks"] == 1
    pods = _attempt_pods(api_client, namespace, "spiky", 1)
    assert {p.metadata.name: p.metadata.uid for p in pods} == before
    assert all(c.restart_count == 0 for p in pods for c in p.status.container_statuses)
    assert done["progress"]["steps"] == "60/60"
    assert float(done["progress"]["loss"]) < float(rollback["loss"])
    # The diverged timeline's step-40 was abandoned, then written again by the new one.
    assert {c["step"]: c["valid"] for c in done["checkpoints"]}[40] is True
    rolling = _condition(_job(api_client, namespace, "spiky"), "RollingBack")
    assert rolling is not None
    assert (rolling["status"], rolling["reason"]) == ("False", "RolledBackInProcess")
    shown = described(crds, "llmtrainingjob", "spiky", namespace, "RolledBackInProcess")
    assert "RolledBackInProcess" in shown


@pytest.mark.usefixtures("operator")
def test_a_worker_killed_mid_training_resumes_from_the_newest_checkpoint(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    manifest = _real_job("killed")
    # Long enough that the kill lands mid-run: the tiny model trains ~20 steps a second, and
    # progress reaches status every 5 s.
    manifest["spec"]["training"]["maxSteps"] = 600
    _apply(crds, namespace, manifest)

    def checkpointed() -> bool:
        status = _job(api_client, namespace, "killed").get("status") or {}
        return any(c["step"] >= 20 for c in status.get("checkpoints", []))

    wait_for(checkpointed, timeout_s=180, interval_s=0.5)
    killed_at = int(_job(api_client, namespace, "killed")["status"]["progress"]["step"])
    victim = _attempt_pods(api_client, namespace, "killed", 1)[1]
    # Killed, not stopped: no grace period, as when a node or a process dies.
    client.CoreV1Api(api_client).delete_namespaced_pod(
        victim.metadata.name, namespace, grace_period_seconds=0
    )
    assert killed_at < 600
    done = _finished(api_client, namespace, "killed")
    assert done["phase"] == "Succeeded", json.dumps(done.get("conditions"))
    assert [a["number"] for a in done["attempts"]] == [1, 2]
    assert done["recovery"]["restarts"] == 1
    assert done["progress"]["steps"] == "600/600"
    # The new gang resumed from the newest checkpoint: at most one interval (10 steps) lost.
    assert done["attempts"][1]["resumedFromStep"] >= killed_at - 10


@pytest.mark.usefixtures("operator")
def test_more_spikes_than_max_rollbacks_end_in_failed(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    manifest = _real_job("unstable", annotations={"trainkube.io/fault": '{"spikeAtStep": 25}'})
    manifest["spec"]["rollback"]["maxRollbacks"] = 0  # nor may the workers roll back in place
    _apply(crds, namespace, manifest)
    failed = _wait_condition(api_client, namespace, "unstable", "Failed", timeout_s=240)
    assert failed["reason"] == "RollbacksExhausted"
    assert "training diverged at step 26" in failed["message"]
    assert "maxRollbacks is 0" in failed["message"]
    status = _job(api_client, namespace, "unstable")["status"]
    assert [a["number"] for a in status["attempts"]] == [1]
    assert status["rollbacks"] == []


@pytest.mark.parametrize("interruption", ["suspend", "worker-killed"])
@pytest.mark.usefixtures("operator")
def test_after_a_rollback_the_next_attempt_continues_the_current_timeline(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str, interruption: str
) -> None:
    """The cases that once restarted from step 0 or the rollback target: after rolling back to
    step 30 by restarting the pods (rollback.inProcess false), at step 70 or later the job is
    suspended and resumed, or a worker is killed; the next attempt resumes from the newest
    checkpoint of the new timeline."""
    manifest = _real_job("lineage", annotations={"trainkube.io/fault": '{"spikeAtStep": 45}'})
    manifest["spec"]["training"]["maxSteps"] = 600
    manifest["spec"]["rollback"]["inProcess"] = False  # the pods restart for the rollback
    _apply(crds, namespace, manifest)

    def far_enough() -> bool:
        status = _job(api_client, namespace, "lineage").get("status") or {}
        attempts = status.get("attempts") or []
        step = int((status.get("progress") or {}).get("step") or 0)
        return len(attempts) == 2 and step >= 70

    wait_for(far_enough, timeout_s=300, interval_s=0.5)
    patch = client.CustomObjectsApi(api_client).patch_namespaced_custom_object

    def suspend(value: bool) -> None:
        body = {"spec": {"suspend": value}}
        patch("trainkube.io", "v1alpha1", namespace, "llmtrainingjobs", "lineage", body)

    if interruption == "suspend":
        suspend(True)
        _wait_condition(api_client, namespace, "lineage", "Suspended", timeout_s=120)
        suspend(False)
    else:
        victim = _attempt_pods(api_client, namespace, "lineage", 2)[-1]
        client.CoreV1Api(api_client).delete_namespaced_pod(
            victim.metadata.name, namespace, grace_period_seconds=0
        )
    done = _finished(api_client, namespace, "lineage")
    assert done["phase"] == "Succeeded", json.dumps(done.get("conditions"))
    first, second, third = done["attempts"][:3]
    assert first["reason"] == "Diverged"
    [rollback] = done["rollbacks"]
    assert (rollback["inProcess"], rollback["fromCheckpointStep"]) == (False, 30)
    assert rollback["learningRate"] == pytest.approx(0.0015)
    assert _run_config(api_client, namespace, "lineage", 2).recovery.lr_factor == 0.5
    assert second["reason"] == ("Suspended" if interruption == "suspend" else "WorkerFailed")
    assert second["rollbackTo"] == 30
    assert third.get("rollbackTo") is None
    resumed = third["resumedFromStep"]  # as attempt 3's trainer reported it
    assert resumed >= 60
    assert resumed % 10 == 0
    assert _run_config(api_client, namespace, "lineage", 3).checkpoints.abandon_after is None
    assert done["progress"]["steps"] == "600/600"
