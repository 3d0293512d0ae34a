"""Hang detection for real, on the real CPU node: one of two ranks blocks forever before a step
(the other then waits for it in the gradient all-reduce); the operator sees no step end for
hangTimeoutSeconds, restarts the gang with reason Hung, and the next attempt finishes from the
newest checkpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.conftest import apply_manifests
from tests.cluster.test_end_to_end import _example, _phase


@pytest.mark.usefixtures("operator")
def test_a_rank_that_blocks_forever_is_restarted_as_hung_and_the_job_finishes(
    api_client: Any, crds: Any, namespace: str, trainer_image: str
) -> None:
    job = _example(
        "01-tiny-pretrain-cpu.yaml",
        **{
            "spec.training.maxSteps": 30,
            "spec.resources.cpusPerNode": "500m",
            "spec.checkpoints.interval": 10,
            "spec.failurePolicy": {"hangTimeoutSeconds": 15, "backoffSeconds": 0},
        },
    )
    job["metadata"]["annotations"] = {"trainkube.io/fault": json.dumps({"hangAtStep": 15})}
    apply_manifests(crds, namespace, job)
    status = _phase(api_client, namespace, "llmtrainingjobs", "tiny-pretrain", "Succeeded", 420)
    first, second = status["attempts"][0], status["attempts"][1]
    assert first["reason"] == "Hung", first
    assert "no training step for" in first["message"]
    assert "the last step (14) ended" in first["message"]
    assert second["resumedFromStep"] == 10
    assert status["recovery"]["restarts"] == 1
    assert status["progress"]["steps"] == "30/30"
