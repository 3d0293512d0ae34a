"""trainkube jobs on the local cluster's real CPU node (kubelet, containerd, runc), as pods of the
CPU trainer image built here: two multi-node jobs side by side, a real out-of-memory kill, an
image the node does not have, and the user the image runs as."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.conftest import apply_manifests
from tests.cluster.test_operator import _condition, _job
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("operator")


def _tiny(name: str, *, steps: int = 20, **resources: Any) -> dict[str, Any]:
    """The demo's tiny pre-training job (examples/01), shortened, on 2 half-core workers."""
    manifest: dict[str, Any] = yaml.safe_load(
        (REPO / "examples" / "01-tiny-pretrain-cpu.yaml").read_text()
    )
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["training"].update(maxSteps=steps, evalInterval=steps)
    spec["checkpoints"].update(interval=steps)
    spec["resources"].update(cpusPerNode="500m", **resources)
    spec["failurePolicy"] = {"maxRestarts": 0}
    return manifest


def _status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(_job(api, namespace, name).get("status") or {})


def _finished(api: Any, namespace: str, name: str, timeout_s: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = _status(api, namespace, name)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    found: dict[str, Any] = wait_for(done, timeout_s=timeout_s, interval_s=1)
    return found


def test_two_multi_node_jobs_at_once_both_succeed_on_the_real_node(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    # Each rank 0 listens on the same port (29500): in pods of their own, they do not collide.
    apply_manifests(crds, namespace, _tiny("left"), _tiny("right"))
    for name in ("left", "right"):
        status = _finished(api_client, namespace, name, timeout_s=300)
        assert status["phase"] == "Succeeded", json.dumps(status.get("conditions"))
        assert status["progress"]["steps"] == "20/20"
        assert [a["number"] for a in status["attempts"]] == [1]
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
    workers = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") == "worker"]
    assert len(workers) == 4
    assert {p.spec.node_name for p in workers} == {"cpu-node-0"}
    assert {p.spec.containers[0].image for p in workers} == {trainer_image}


def test_a_worker_killed_by_the_kernel_for_memory_fails_the_attempt_as_out_of_memory(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    # 41M parameters in 1 GiB: the planner's estimate fits (model states and activations), but
    # the trainer process, torch and DeepSpeed included, does not: the cgroup's OOM killer ends
    # it, and the kubelet reports OOMKilled.
    manifest = _tiny("too-big", cpuMemoryPerNode="1Gi")
    manifest["spec"]["model"]["architecture"].update(layers=8, hiddenSize=640, heads=8)
    manifest["spec"]["failurePolicy"]["escalateOnOom"] = False
    apply_manifests(crds, namespace, manifest)
    status = _finished(api_client, namespace, "too-big", timeout_s=300)
    assert status["phase"] == "Failed"
    [attempt] = status["attempts"]
    assert attempt["reason"] == "OutOfMemory"
    # The kernel killed the trainer (a child of the deepspeed launcher, which then exits with
    # its own code); the kubelet saw the cgroup's OOM kill and says so.
    assert "(OOMKilled)" in attempt["message"]


def test_an_image_the_node_cannot_get_is_named_with_the_kubelets_reason_within_seconds(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    manifest = _tiny("noimage")
    manifest["spec"]["template"] = {
        "image": "ghcr.io/trainkube/no-such-trainer:0.0.0",
        "imagePullPolicy": "Never",
    }
    applied = time.monotonic()
    apply_manifests(crds, namespace, manifest)

    def stuck() -> dict[str, Any] | None:
        found = _condition(_job(api_client, namespace, "noimage"), "Running")
        return found if found and found["reason"] == "ImageUnavailable" else None

    running = wait_for(stuck, timeout_s=60, interval_s=0.5)
    print(f"ImageUnavailable {time.monotonic() - applied:.1f} s after apply")
    assert running["status"] == "False"
    assert "'ghcr.io/trainkube/no-such-trainer:0.0.0'" in running["message"]
    assert "ErrImageNeverPull" in running["message"]
    assert _status(api_client, namespace, "noimage")["phase"] == "Planned"
    # Events are posted from the operator's Event thread, a moment after the status.
    items = wait_for(
        lambda: (
            client.CoreV1Api(api_client)
            .list_namespaced_event(
                namespace, field_selector="involvedObject.name=noimage,reason=ImageUnavailable"
            )
            .items
        ),
        timeout_s=30,
    )
    assert items[0].type == "Warning"


def test_the_trainer_image_runs_as_a_non_root_user(
    api_client: Any, namespace: str, trainer_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True},  # the kubelet refuses a root image
            "containers": [{"name": "main", "image": trainer_image, "command": ["id"]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: core.read_namespaced_pod("whoami", namespace).status.phase == "Succeeded",
        timeout_s=60,
    )
    output = core.read_namespaced_pod_log("whoami", namespace)
    assert output.startswith("uid=1000(")
    assert "gid=1000(" in output
