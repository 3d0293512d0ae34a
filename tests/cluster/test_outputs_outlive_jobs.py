"""Nothing trained is lost when its job goes: the claim a job's model is on is kept when the job
is deleted (by ttlSecondsAfterFinished or by hand), and a fine-tune created afterwards still
finds the model through the output record; with whenJobDeleted: Delete the claim goes with the
job, and a later consumer fails naming it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import apply_manifests
from tests.cluster.test_end_to_end import _example, _phase
from tests.cluster.test_operator import (
    _finish,
    _pods,
    _training_job,
    _wait_condition,
    fine_tune_of,
    manual_volume,
)
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

GROUP, VERSION = "trainkube.io", "v1alpha1"


def _gone(api: Any, namespace: str, plural: str, name: str) -> bool:
    try:
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _claim(api: Any, namespace: str, name: str) -> Any:
    return client.CoreV1Api(api).read_namespaced_persistent_volume_claim(name, namespace)


@pytest.mark.usefixtures("operator")
def test_a_model_outlives_its_job_and_a_fine_tune_created_after_the_deletion_uses_it(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    pretrain = _example(
        "01-tiny-pretrain-cpu.yaml",
        **{
            "spec.training.maxSteps": 20,
            "spec.resources.nodes": 1,
            "spec.resources.cpusPerNode": "500m",
            "spec.ttlSecondsAfterFinished": 0,
        },
    )
    apply_manifests(crds, namespace, pretrain)
    wait_for(
        lambda: _gone(api_client, namespace, "llmtrainingjobs", "tiny-pretrain"), timeout_s=240
    )

    claim = _claim(api_client, namespace, "tiny-pretrain-ltj-checkpoints")
    assert claim.metadata.deletion_timestamp is None
    assert not claim.metadata.owner_references
    assert claim.status.phase == "Bound"
    record = client.CoreV1Api(api_client).read_namespaced_config_map(
        "tiny-pretrain-ltj-output", namespace
    )
    assert '"modelPath": "tiny-pretrain-ltj-checkpoints:final/model"' in record.data["output.json"]

    lora = _example(
        "02-lora-finetune.yaml",
        **{
            "spec.training.maxSteps": 5,
            "spec.resources.nodes": 1,
            "spec.resources.cpusPerNode": "500m",
        },
    )
    apply_manifests(crds, namespace, lora)
    done = _phase(api_client, namespace, "finetunejobs", "tiny-lora", "Succeeded", 240)
    assert done["output"]["adapterPath"] == "tiny-lora-ftj-checkpoints:final/adapter"

    # Deleted by hand this time: its claim stays too, and so does its record.
    crds.kubectl("delete", "finetunejob", "tiny-lora", "-n", namespace, "--wait=true")
    kept = _claim(api_client, namespace, "tiny-lora-ftj-checkpoints")
    assert kept.metadata.deletion_timestamp is None
    client.CoreV1Api(api_client).read_namespaced_config_map("tiny-lora-ftj-output", namespace)


@pytest.mark.usefixtures("operator")
def test_a_consumer_of_a_deleted_job_whose_claim_went_with_it_fails_naming_the_claim(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    # KWOK's GPU nodes cannot use the local class's node-bound volumes: a volume of class
    # manual, made for the claim the operator will create, binds it anywhere.
    claim = "base-ltj-checkpoints"
    volume = manual_volume(namespace, claim)
    crds.kubectl("apply", "-f", "-", input_text=json.dumps(volume))
    base = _training_job(
        "base",
        nodes_=1,
        gpus=1,
        ttlSecondsAfterFinished=0,
        checkpoints={
            "createVolume": {
                "size": "1Gi",
                "storageClassName": "manual",
                "whenJobDeleted": "Delete",
            }
        },
    )
    try:
        _consumer_of_a_job_gone_with_its_claim(api_client, crds, namespace, base)
    finally:
        crds.kubectl("delete", "persistentvolume", f"{namespace}-{claim}", "--ignore-not-found")


def _consumer_of_a_job_gone_with_its_claim(
    api_client: Any, crds: LocalCluster, namespace: str, base: dict[str, Any]
) -> None:
    apply_manifests(crds, namespace, base)
    _wait_condition(api_client, namespace, "base", "Running")
    for pod in _pods(api_client, namespace, "base"):
        _finish(api_client, namespace, pod, 0)
    wait_for(lambda: _gone(api_client, namespace, "llmtrainingjobs", "base"), timeout_s=60)

    def claim_gone() -> bool:
        try:
            _claim(api_client, namespace, "base-ltj-checkpoints")
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(claim_gone, timeout_s=60)
    adapt = fine_tune_of("base")
    apply_manifests(crds, namespace, adapt)
    failed = _wait_condition(
        api_client, namespace, "adapt", "Failed", plural="finetunejobs", timeout_s=60
    )
    assert "LLMTrainingJob 'base' was deleted" in failed["message"]
    assert "'base-ltj-checkpoints'" in failed["message"]
    assert "gone" in failed["message"]
