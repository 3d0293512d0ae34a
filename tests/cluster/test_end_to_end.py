"""The whole chain on the local cluster, for real: the operator turns a tiny pre-training job
into two worker pods of the CPU trainer image (ZeRO-2 over gloo) on the real CPU node, a LoRA
fine-tune of its output that learns a task the base cannot do, and an A/B evaluation of the two
whose gates check that it did (on held-out items) at a bounded cost in perplexity."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.conftest import apply_manifests
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "trainkube.io", "v1alpha1"


def _example(name: str, **changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value
    return manifest


def _status(api: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    found: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return dict(found.get("status") or {})


def _phase(
    api: Any, namespace: str, plural: str, name: str, want: str, timeout_s: float
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = _status(api, namespace, plural, name)
        if status.get("phase") == "Failed" and want != "Failed":
            pytest.fail(f"{name} failed: {json.dumps(status.get('conditions'))}")
        return status if status.get("phase") == want else None

    found: dict[str, Any] = wait_for(check, timeout_s=timeout_s, interval_s=0.5)
    return found


@pytest.mark.usefixtures("operator")
def test_pretrain_then_a_lora_that_improves_its_task_metric_over_its_base_for_real(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    pretrain = _example("01-tiny-pretrain-cpu.yaml")
    apply_manifests(crds, namespace, pretrain)

    # Progress shows while it runs: several distinct steps before it ends.
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = _status(api_client, namespace, "llmtrainingjobs", "tiny-pretrain")
        if status.get("phase") == "Running" and status.get("progress"):
            seen.add(int(status["progress"]["step"]))
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    status = _phase(api_client, namespace, "llmtrainingjobs", "tiny-pretrain", "Succeeded", 10)
    assert len(seen) >= 2, seen
    assert status["progress"]["steps"] == "120/120"
    assert float(status["progress"]["loss"]) < 3.0
    assert status["plan"]["zeroStage"] == 2
    assert status["plan"]["dataParallelSize"] == 2
    assert [c["step"] for c in status["checkpoints"]] == [100, 120]
    assert status["output"] == {"modelPath": "tiny-pretrain-ltj-checkpoints:final/model"}
    worker = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(
            namespace, label_selector="batch.kubernetes.io/job-name=tiny-pretrain-ltj-a1"
        )
        .items[0]
    )
    assert worker.spec.containers[0].image == trainer_image
    assert worker.spec.node_name == "cpu-node-0"
    log = client.CoreV1Api(api_client).read_namespaced_pod_log(worker.metadata.name, namespace)
    assert '"world_size": 2' in log
    assert "DeepSpeed info" in log or "deepspeed" in log.lower()

    apply_manifests(
        crds,
        namespace,
        _example("02-lora-finetune.yaml"),
        _example("03-ab-eval.yaml"),
    )
    lora = _phase(api_client, namespace, "finetunejobs", "tiny-lora", "Succeeded", 240)
    assert lora["output"] == {
        "adapterPath": "tiny-lora-ftj-checkpoints:final/adapter",
        "modelPath": "tiny-lora-ftj-checkpoints:final/model",
    }
    evaluation = _phase(api_client, namespace, "evaljobs", "tiny-ab", "Succeeded", 240)
    metrics = {(r["evaluation"], r["metric"]): r for r in evaluation["results"]}
    # The fine-tune learnt its task: exact match on held-out items, zero-shot, well above its
    # base's, and the gate that requires it passed; perplexity on the stories rose, boundedly.
    task = metrics[("task", "exactMatch")]
    assert task["examples"] == 100
    assert task["value"] >= task["baseline"] + 0.5, task
    perplexity = metrics[("held-out", "perplexity")]
    assert 1 < perplexity["baseline"] < perplexity["value"] <= perplexity["baseline"] + 10
    verdicts = {g["metric"]: g for g in evaluation["gates"]}
    assert verdicts["task.exactMatch"]["passed"], verdicts["task.exactMatch"]
    assert verdicts["held-out.perplexity"]["passed"], verdicts["held-out.perplexity"]
    speed = metrics[("speed", "tokensPerSecondP50")]
    assert speed["value"] > 0
    assert speed["baseline"] > 0
    assert speed["setup"]["samples"] == 16
    assert evaluation["gatesPassed"] == "4/4"
    row = crds.kubectl("get", "evaljob", "tiny-ab", "-n", namespace, "--no-headers").split()
    assert row[1:3] == ["Succeeded", "4/4"]
    # kubectl describe shows latency beside quality, with how it was measured.
    described = crds.kubectl("describe", "evaljob", "tiny-ab", "-n", namespace)
    for shown in ("perplexity", "exactMatch", "ttftP95Ms", "tokensPerSecondP50", "Max New Tokens"):
        assert shown in described
