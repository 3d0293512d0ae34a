"""The chart installed for real: `helm install` puts the operator image on the real node under
the chart's ServiceAccount (the session's host operator is stopped meanwhile, so this one does
all the work), and the pre-train → LoRA → A/B eval chain runs in a namespace that enforces the
`restricted` Pod Security Standard. Then: no Secret value in any object or log; a template that
breaks `restricted` is told so; `helm upgrade` rolls the operator; `helm uninstall` keeps the
CRDs, the jobs and their outputs.

The tests run in file order and build on each other (one release, one jobs namespace)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.charts import helm as helm_build
from tests.charts.test_chart import CHART
from tests.cluster.conftest import OperatorProcess, apply_manifests
from tests.cluster.test_end_to_end import _example, _phase, _status
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster
from tests.localcluster.demo import load_images
from trainkube.controller.clients import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[2]
RELEASE, SYSTEM = "tk", "trainkube-system"
DEPLOYMENT = f"{RELEASE}-trainkube"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
SECRET_VALUE = f"wandb-key-{secrets.token_hex(16)}"
SMALL = "500m"  # two workers and two operator replicas share the node's two cores


@pytest.fixture(scope="module")
def helm(local_cluster: LocalCluster) -> Any:
    binary = helm_build.binary()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [binary, "--kubeconfig", str(local_cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run


def _label_restricted(api: Any, namespace: str) -> None:
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})


@pytest.fixture(scope="module")
def release(
    crds: LocalCluster, api_client: Any, helm: Any, operator: OperatorProcess, trainer_image: str
) -> Iterator[str]:
    """The chart installed in trainkube-system (restricted) with the operator image loaded; the
    host operator stopped until the module ends."""
    operator.stop()
    load_images(crds, "operator")
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=SYSTEM, labels=RESTRICTED))
    )
    try:
        helm("install", RELEASE, str(CHART), "--namespace", SYSTEM, "--wait", "--timeout", "180s")
        yield SYSTEM
    finally:
        helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", check=False)
        core.delete_namespace(SYSTEM)
        wait_for(
            lambda: SYSTEM not in {n.metadata.name for n in core.list_namespace().items},
            timeout_s=180,
        )
        operator.start()


@pytest.fixture(scope="module")
def jobs_namespace(api_client: Any, release: str) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"helm-jobs-{secrets.token_hex(3)}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED))
    )
    wait_for(
        lambda: any(
            a.metadata.name == "default" for a in core.list_namespaced_service_account(name).items
        )
    )
    yield name
    core.delete_namespace(name)


def _operator_pods(api: Any) -> list[Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        SYSTEM, label_selector="app.kubernetes.io/name=trainkube"
    )
    return [p for p in pods.items if not p.metadata.deletion_timestamp]


def test_operator_runs_in_cluster_from_its_image_under_the_charts_service_account(
    api_client: Any, release: str, operator: OperatorProcess
) -> None:
    # The session's host operator is stopped: the in-cluster one does all the work.
    assert operator.process is not None
    assert operator.process.poll() is not None
    pods = _operator_pods(api_client)
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.service_account_name == DEPLOYMENT
        assert pod.spec.containers[0].image == "ghcr.io/trainkube/operator:0.1.0"
        assert pod.spec.node_name == "cpu-node-0"
        assert all(c.ready for c in pod.status.container_statuses)
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("trainkube-operator", SYSTEM)
    # The leader is one of the two pods (its identity is its hostname, the pod's name, and pid).
    holder = str(lease.spec.holder_identity)
    assert any(holder.startswith(f"{p.metadata.name}-") for p in pods), holder


def _tracked_pretrain() -> dict[str, Any]:
    manifest = _example(
        "01-tiny-pretrain-cpu.yaml",
        **{"spec.training.maxSteps": 40, "spec.resources.cpusPerNode": SMALL},
    )
    manifest["spec"]["tracking"] = {
        "project": "helm-test",
        "mode": "offline",
        "apiKeySecretRef": {"name": "wandb", "key": "api-key"},
    }
    return manifest


def _gates_without(prefix: str) -> list[dict[str, Any]]:
    """examples/03's gates, less those on metrics starting with `prefix`."""
    gates = yaml.safe_load((REPO / "examples" / "03-ab-eval.yaml").read_text())["spec"]["gates"]
    return [g for g in gates if not g["metric"].startswith(prefix)]


def test_the_chain_runs_in_a_restricted_namespace_under_the_in_cluster_operator(
    api_client: Any, crds: LocalCluster, jobs_namespace: str
) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(
        jobs_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="wandb"), string_data={"api-key": SECRET_VALUE}
        ),
    )
    apply_manifests(crds, jobs_namespace, _tracked_pretrain())
    pretrain = _phase(
        api_client, jobs_namespace, "llmtrainingjobs", "tiny-pretrain", "Succeeded", 300
    )
    assert pretrain["progress"]["steps"] == "40/40"
    apply_manifests(
        crds,
        jobs_namespace,
        _example(
            "02-lora-finetune.yaml",
            **{"spec.training.maxSteps": 10, "spec.resources.cpusPerNode": SMALL},
        ),
        # Without the task gate (minImprovement): 10 LoRA steps do not teach the task, and
        # what this chain checks is the install's privileges, not what the fine-tune learns.
        _example(
            "03-ab-eval.yaml",
            **{"spec.resources.cpusPerNode": SMALL, "spec.gates": _gates_without("task.")},
        ),
    )
    _phase(api_client, jobs_namespace, "finetunejobs", "tiny-lora", "Succeeded", 300)
    evaluation = _phase(api_client, jobs_namespace, "evaljobs", "tiny-ab", "Succeeded", 300)
    assert evaluation["gatesPassed"] == "3/3"
    worker = client.CoreV1Api(api_client).list_namespaced_pod(
        jobs_namespace, label_selector="batch.kubernetes.io/job-name=tiny-pretrain-ltj-a1"
    )
    assert worker.items[0].spec.containers[0].image == DEFAULT_IMAGES["cpu"]


def _everything_readable(cluster: LocalCluster, namespace: str) -> list[str]:
    """Every object in `namespace` but Secrets (Events and pods' termination messages
    included), the PersistentVolumes, and every log of its pods and of the operator's."""
    kinds = [
        k
        for k in cluster.kubectl(
            "api-resources", "--verbs=list", "--namespaced", "-o", "name"
        ).split()
        if k not in ("secrets",)
    ]
    texts = [
        cluster.kubectl("get", ",".join(kinds), "-n", namespace, "-o", "json"),
        cluster.kubectl("get", "persistentvolumes", "-o", "json"),
        cluster.kubectl("get", "events", "-n", SYSTEM, "-o", "json"),
    ]
    for ns in (namespace, SYSTEM):
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json"))["items"]
        assert pods, f"no pods in {ns} to read logs from"
        for pod in pods:
            texts.append(
                cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], "--all-containers")
            )
    return texts


def test_no_secret_value_reaches_any_object_event_termination_message_or_log(
    crds: LocalCluster, jobs_namespace: str
) -> None:
    texts = _everything_readable(crds, jobs_namespace)
    joined = "\n".join(texts)
    # It read them all: the workers' objects and the Events are among them.
    assert "tiny-pretrain-ltj-a1" in joined
    assert '"kind": "Event"' in joined
    assert SECRET_VALUE not in joined
    assert base64.b64encode(SECRET_VALUE.encode()).decode() not in joined


def test_helm_upgrade_rolls_the_operator_to_the_changed_values(
    api_client: Any, helm: Any, release: str
) -> None:
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM,
        "--reuse-values",
        "--set",
        "replicas=1",
        "--set",
        "podLabels.rollout=second",
        "--wait",
        "--timeout",
        "180s",
    )
    pods = wait_for(
        lambda: (
            (found := _operator_pods(api_client))
            and len(found) == 1
            and found[0].metadata.labels.get("rollout") == "second"
            and all(c.ready for c in found[0].status.container_statuses or [])
            and found
        ),
        timeout_s=120,
    )
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(DEPLOYMENT, SYSTEM)
    assert deployment.spec.replicas == 1
    assert "PodDisruptionBudget" not in helm("get", "manifest", RELEASE, "-n", SYSTEM).stdout
    leases = client.CoordinationV1Api(api_client)

    def lease_holder() -> str:
        return str(leases.read_namespaced_lease("trainkube-operator", SYSTEM).spec.holder_identity)

    wait_for(lambda: lease_holder().startswith(f"{pods[0].metadata.name}-"), timeout_s=60)


def test_a_template_that_breaks_restricted_is_told_why_no_worker_exists(
    api_client: Any, crds: LocalCluster, jobs_namespace: str
) -> None:
    manifest = _example("01-tiny-pretrain-cpu.yaml", **{"spec.resources.cpusPerNode": SMALL})
    manifest["metadata"]["name"] = "rdma"
    manifest["spec"]["template"] = {"securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}}
    apply_manifests(crds, jobs_namespace, manifest)

    def rejected() -> dict[str, Any] | None:
        conditions = (
            _status(api_client, jobs_namespace, "llmtrainingjobs", "rdma").get("conditions") or []
        )
        running = next((c for c in conditions if c["type"] == "Running"), None)
        return running if running and running["reason"] == "PodsRejected" else None

    running = wait_for(rejected, timeout_s=60)
    assert running["status"] == "False"
    assert 'violates PodSecurity "restricted:latest"' in running["message"]
    assert "IPC_LOCK" in running["message"]
    assert "spec.template.securityContext" in running["message"]
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        jobs_namespace, label_selector="batch.kubernetes.io/job-name=rdma-ltj-a1"
    )
    assert pods.items == []

    def warned() -> list[Any]:  # Events follow the status from the operator's Event thread
        events = crds.kubectl(
            "get",
            "events",
            "-n",
            jobs_namespace,
            "--field-selector",
            "involvedObject.name=rdma,reason=PodsRejected",
            "-o",
            "json",
        )
        return list(json.loads(events)["items"])

    assert wait_for(warned, timeout_s=30), "no Warning Event on the job"


def test_helm_uninstall_keeps_the_crds_the_jobs_and_their_outputs(
    api_client: Any, crds: LocalCluster, helm: Any, release: str, jobs_namespace: str
) -> None:
    helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait")
    assert not _operator_pods(api_client)
    for name in ("llmtrainingjobs", "finetunejobs", "evaljobs"):
        crds.kubectl("get", "crd", f"{name}.trainkube.io")
    status = _status(api_client, jobs_namespace, "llmtrainingjobs", "tiny-pretrain")
    assert status["phase"] == "Succeeded"
    claims = client.CoreV1Api(api_client).list_namespaced_persistent_volume_claim(jobs_namespace)
    bound = {c.metadata.name: c.status.phase for c in claims.items}
    for claim in ("tiny-pretrain-ltj-checkpoints", "tiny-lora-ftj-checkpoints"):
        assert bound.get(claim) == "Bound", bound
