"""Smoke tests that prove the local control plane is a real Kubernetes: API machinery, the
scheduler, the controller-manager (Job controller, garbage collector), RBAC, and the KWOK GPU
nodes a test can drive to any pod outcome."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.conftest import wait_for
from tests.localcluster import nodes
from tests.localcluster.cluster import ClusterError, LocalCluster

MIN_NODES_RULE = "!has(self.minNodes) || self.minNodes <= self.nodes"
GO_MOD = Path(__file__).resolve().parents[1] / "localcluster" / "go" / "kube" / "go.mod"


def _pod(name: str, *, gpus: int) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="worker",
                    image="trainkube/trainer:test",
                    resources=client.V1ResourceRequirements(limits={nodes.GPU_RESOURCE: str(gpus)}),
                )
            ],
        ),
    )


def test_apiserver_reports_the_pinned_kubernetes_release(api_client: Any) -> None:
    pinned = re.search(r"require k8s.io/kubernetes (v\S+)", GO_MOD.read_text())
    assert pinned is not None
    info = client.VersionApi(api_client).get_code()
    assert info.git_version == pinned.group(1)


def test_gpu_nodes_are_ready_with_declared_capacity(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    pool = nodes.GpuNodePool()
    listed = {n.metadata.name: n for n in core.list_node(label_selector="type=kwok").items}
    assert sorted(listed) == sorted(pool.node_names())
    for node in listed.values():
        assert node.status.capacity[nodes.GPU_RESOURCE] == str(pool.gpus)
        assert node.status.allocatable[nodes.GPU_RESOURCE] == str(pool.gpus)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"

    # Node leases are how the node-lifecycle controller knows a node is alive: KWOK renews them.
    leases = client.CoordinationV1Api(api_client)
    first = leases.read_namespaced_lease(pool.node_names()[0], "kube-node-lease")
    wait_for(
        lambda: (
            leases.read_namespaced_lease(pool.node_names()[0], "kube-node-lease").spec.renew_time
            > first.spec.renew_time
        ),
        timeout_s=30,
    )


def test_crd_schema_rejects_an_invalid_object(api_client: Any, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    group = "smoke.trainkube.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["nodes"],
                                    "properties": {
                                        "nodes": {"type": "integer", "minimum": 1},
                                        "precision": {"type": "string", "enum": ["bf16", "fp32"]},
                                        "minNodes": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": MIN_NODES_RULE,
                                            "message": "minNodes must not exceed nodes",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as error:  # a rerun against a reused cluster
        if error.status != 409:
            raise

    def established() -> bool:
        current = extensions.read_custom_resource_definition(f"widgets.{group}")
        return any(
            c.type == "Established" and c.status == "True" for c in current.status.conditions or []
        )

    wait_for(established)
    objects = client.CustomObjectsApi(api_client)

    def create(spec: dict[str, Any]) -> Any:
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": spec,
        }
        return objects.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)

    for bad_spec, complaint in [
        (
            {"nodes": 0},
            "spec.nodes: Invalid value: 0: spec.nodes in body should be greater than or equal to 1",
        ),
        ({"nodes": 2, "precision": "fp8"}, 'spec.precision: Unsupported value: "fp8"'),
        ({"nodes": 2, "minNodes": 3}, "minNodes must not exceed nodes"),
    ]:
        with pytest.raises(ApiException) as rejected:
            create(bad_spec)
        assert rejected.value.status == 422
        assert complaint in json.loads(rejected.value.body)["message"]

    created = create({"nodes": 2, "precision": "bf16"})
    assert created["spec"] == {"nodes": 2, "precision": "bf16"}


def test_watch_delivers_added_modified_and_deleted_events(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    seen: list[tuple[str, str]] = []
    ready = threading.Event()
    # From this version on: the watch then sees every change below, however late its request
    # reaches the apiserver (without it, changes made before would come as one ADDED).
    version = core.list_namespaced_config_map(namespace).metadata.resource_version

    def collect() -> None:
        stream = watch.Watch()
        ready.set()
        for event in stream.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=version,
            timeout_seconds=20,
        ):
            name = event["object"].metadata.name
            if name == "watched":
                seen.append((event["type"], event["object"].data.get("step", "")))
            if event["type"] == "DELETED" and name == "watched":
                stream.stop()

    watcher = threading.Thread(target=collect)
    watcher.start()
    ready.wait()
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"step": "1"})
    core.create_namespaced_config_map(namespace, body)
    core.patch_namespaced_config_map("watched", namespace, {"data": {"step": "2"}})
    core.delete_namespaced_config_map("watched", namespace)
    watcher.join(timeout=25)

    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]


def test_gpu_pod_is_scheduled_onto_a_node_with_room(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("fits", gpus=8))

    running = wait_for(
        lambda: (
            (pod := core.read_namespaced_pod("fits", namespace)).status.phase == "Running" and pod
        )
    )
    assert running.spec.node_name in nodes.GpuNodePool().node_names()
    # The admission plugin added the toleration for the GPU nodes' taint.
    assert any(t.key == nodes.GPU_RESOURCE for t in running.spec.tolerations)


def test_gpu_pod_stays_pending_when_no_node_has_room(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("too-big", gpus=nodes.GpuNodePool().gpus + 1))

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("too-big", namespace)
        return next(
            (
                c
                for c in pod.status.conditions or []
                if c.type == "PodScheduled" and c.reason == "Unschedulable"
            ),
            None,
        )

    condition = wait_for(unschedulable)
    assert f"Insufficient {nodes.GPU_RESOURCE}" in condition.message
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


@pytest.mark.parametrize(
    ("exit_code", "reason", "phase", "expected_reason"),
    [
        (0, None, "Succeeded", "Completed"),
        (1, None, "Failed", "Error"),
        (137, "OOMKilled", "Failed", "OOMKilled"),
    ],
)
def test_a_test_can_end_a_running_pod_with_an_exit_code(
    api_client: Any,
    namespace: str,
    exit_code: int,
    reason: str | None,
    phase: str,
    expected_reason: str,
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("worker", gpus=1))
    wait_for(lambda: core.read_namespaced_pod("worker", namespace).status.phase == "Running")

    annotations = nodes.finish_annotations(exit_code=exit_code, reason=reason)
    core.patch_namespaced_pod("worker", namespace, {"metadata": {"annotations": annotations}})

    ended = wait_for(
        lambda: (pod := core.read_namespaced_pod("worker", namespace)).status.phase == phase and pod
    )
    terminated = ended.status.container_statuses[0].state.terminated
    assert terminated.exit_code == exit_code
    assert terminated.reason == expected_reason
    assert ended.status.container_statuses[0].state.running is None


def test_job_controller_and_garbage_collector_clean_up_children(
    api_client: Any, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="gang"),
        spec=client.V1JobSpec(
            completions=2,
            parallelism=2,
            completion_mode="Indexed",
            backoff_limit=0,
            template=client.V1PodTemplateSpec(spec=_pod("unused", gpus=1).spec),
        ),
    )
    created = batch.create_namespaced_job(namespace, job)
    # The Job controller (in kube-controller-manager) creates the indexed pods.
    pods = wait_for(
        lambda: (
            len(items := core.list_namespaced_pod(namespace, label_selector="job-name=gang").items)
            == 2
            and items
        )
    )
    indexes = sorted(
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods
    )
    assert indexes == ["0", "1"]
    # A child held only by an owner reference, with no controller of its own behind it.
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="gang-config",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="batch/v1", kind="Job", name="gang", uid=created.metadata.uid
                    )
                ],
            )
        ),
    )

    batch.delete_namespaced_job("gang", namespace, propagation_policy="Background")

    wait_for(
        lambda: (
            not core.list_namespaced_config_map(
                namespace, field_selector="metadata.name=gang-config"
            ).items
        )
    )
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="job-name=gang").items)


def test_rbac_denies_a_service_account_what_its_role_does_not_grant(
    api_client: Any, local_cluster: LocalCluster, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    # A real, signed service-account token from the TokenRequest API.
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    configuration = client.Configuration()
    configuration.host = local_cluster.layout.server_url
    configuration.ssl_ca_cert = str(local_cluster.layout.pki_dir / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CoreV1Api(client.ApiClient(configuration))

    assert as_reader.list_namespaced_config_map(namespace).items is not None
    for forbidden in (
        lambda: as_reader.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
        ),
        lambda: as_reader.list_namespaced_secret(namespace),
        lambda: as_reader.list_namespaced_config_map("default"),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
        message = json.loads(denied.value.body)["message"]
        assert f'User "system:serviceaccount:{namespace}:reader" cannot' in message


def test_waiting_for_a_condition_names_what_is_missing(local_cluster: LocalCluster) -> None:
    # Nodes are Ready (so the wait returns); an absent node is named with why it is waited on.
    local_cluster.wait_condition("Ready", "node/gpu-node-0", "node/gpu-node-1", timeout_s=10)
    with pytest.raises(ClusterError) as missing:
        local_cluster.wait_condition("Ready", "node/gpu-node-0", "node/absent", timeout_s=1)
    assert "not Ready within 1 s: node/absent:" in str(missing.value)
    assert "NotFound" in str(missing.value)
    assert "gpu-node-0" not in str(missing.value)
