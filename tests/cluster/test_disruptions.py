"""Disruptions spend no restart budget; a configuration error spends none either.

KWOK plays the GPU nodes for the disruptions: a worker evicted through the eviction API, and a
worker lost with its node (deleted; the pod garbage collector marks its pods DisruptionTarget
and removes them). Each restarts the gang with reason Disrupted while maxRestarts stays unspent.
The configuration error is real: a fine-tune on the real node whose data lacks the prompt field
it names exits with the trainer's configuration-error code, and the job fails at once."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.cluster.conftest import apply_manifests
from tests.cluster.test_end_to_end import _example
from tests.cluster.test_operator import _job, _pods, _training_job, _wait_condition
from tests.conftest import wait_for
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster


def _attempts(api: Any, namespace: str, name: str, plural: str = "llmtrainingjobs") -> list[Any]:
    return list((_job(api, namespace, name, plural).get("status") or {}).get("attempts") or [])


def _restarted_after_disruption(api: Any, namespace: str, name: str) -> dict[str, Any]:
    """The job's status once its first attempt ended Disrupted and a second one exists."""

    def check() -> dict[str, Any] | None:
        status = _job(api, namespace, name).get("status") or {}
        attempts = status.get("attempts") or []
        return status if len(attempts) >= 2 and attempts[0].get("reason") else None

    status: dict[str, Any] = wait_for(check, timeout_s=120, interval_s=0.5)
    return status


@pytest.mark.usefixtures("operator")
def test_an_evicted_worker_restarts_the_gang_without_spending_a_restart(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    policy = {"maxRestarts": 1, "backoffSeconds": 300}
    apply_manifests(crds, namespace, _training_job("evict", nodes_=2, gpus=1, failurePolicy=policy))
    _wait_condition(api_client, namespace, "evict", "Running")
    victim = sorted(p.metadata.name for p in _pods(api_client, namespace, "evict"))[1]
    client.CoreV1Api(api_client).create_namespaced_pod_eviction(
        victim,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace=namespace)),
    )
    status = _restarted_after_disruption(api_client, namespace, "evict")
    first = status["attempts"][0]
    assert first["reason"] == "Disrupted", first
    assert "EvictionByEvictionAPI" in first["message"] or "DisruptionTarget" in first["message"]
    assert status["recovery"]["restarts"] == 0
    assert status["recovery"]["disruptions"] == 1
    # At once, despite backoffSeconds: the second attempt's workers run.
    wait_for(
        lambda: [a for a in _attempts(api_client, namespace, "evict") if a["number"] == 2],
        timeout_s=30,
    )
    _wait_condition(api_client, namespace, "evict", "Running", timeout_s=60)


@pytest.mark.usefixtures("operator")
def test_a_worker_lost_with_its_node_restarts_the_gang_without_spending_a_restart(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    pool = nodes.GpuNodePool(name=f"doomed-{namespace[-6:]}", count=1)
    (node,) = nodes.gpu_node_manifests(pool)
    core = client.CoreV1Api(api_client)
    core.create_node(node)
    try:
        job = _training_job("lost", nodes_=1, gpus=1, failurePolicy={"maxRestarts": 0})
        job["spec"]["template"]["nodeSelector"] = {"trainkube.io/node-pool": pool.name}
        apply_manifests(crds, namespace, job)
        _wait_condition(api_client, namespace, "lost", "Running", timeout_s=60)
        core.delete_node(node["metadata"]["name"])
        # The pod garbage collector removes pods of a node that is gone after its quarantine.
        status = _restarted_after_disruption(api_client, namespace, "lost")
    finally:
        if node["metadata"]["name"] in {n.metadata.name for n in core.list_node().items}:
            core.delete_node(node["metadata"]["name"])
    first = status["attempts"][0]
    assert first["reason"] == "Disrupted", first
    assert status["recovery"]["restarts"] == 0  # maxRestarts 0, yet it restarted
    assert status["phase"] != "Failed"


@pytest.mark.usefixtures("operator")
def test_a_configuration_error_fails_the_job_at_once_with_restarts_left(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    pretrain = _example(
        "01-tiny-pretrain-cpu.yaml",
        **{
            "spec.training.maxSteps": 10,
            "spec.resources.nodes": 1,
            "spec.resources.cpusPerNode": "500m",
        },
    )
    lora = _example(
        "02-lora-finetune.yaml",
        **{
            "spec.data.promptField": "question",  # the built-in instructions have "prompt"
            "spec.resources.nodes": 1,
            "spec.resources.cpusPerNode": "500m",
            "spec.failurePolicy": {"maxRestarts": 3, "backoffSeconds": 0},
        },
    )
    apply_manifests(crds, namespace, pretrain, lora)
    failed = _wait_condition(
        api_client, namespace, "tiny-lora", "Failed", plural="finetunejobs", timeout_s=300
    )
    assert failed["reason"] == "ConfigurationError"
    assert "records have no field 'question'" in failed["message"]
    attempts = _attempts(api_client, namespace, "tiny-lora", "finetunejobs")
    assert len(attempts) == 1
    assert attempts[0]["reason"] == "ConfigurationError"
