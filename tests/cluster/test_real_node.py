"""The local cluster's real CPU node (`cpu-node-0`: kubelet, containerd, runc, the CNI bridge,
kube-proxy, CoreDNS): pods run in containers of their own with real limits, networks, DNS and
in-cluster API access; claims of the default class get a folder on the node; and `down` leaves
nothing of the node on the machine.

The pods use the probe image (tests/localcluster/go/probe: one static program), loaded with
`realnode.import_images` as the project's images are.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.conftest import OperatorProcess
from tests.conftest import wait_for
from tests.localcluster import hoststate, realnode
from tests.localcluster.cluster import REPO_ROOT, LocalCluster
from tests.localcluster.components import NODE_ADDRESS, NODE_NAME, NODE_POD_CIDR
from trainkube.api import KINDS


@pytest.fixture(scope="module")
def probe_image(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = realnode.probe_image_archive(local_cluster.bin_dir, tmp_path_factory.mktemp("img"))
    [loaded] = local_cluster.import_images([archive])
    assert loaded.images == [realnode.PROBE_IMAGE]
    again = local_cluster.import_images([archive])
    assert again[0].skipped  # the same image is not imported twice
    return realnode.PROBE_IMAGE


def _pod(name: str, image: str, *args: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "args": list(args),
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"trainkube.io/node-pool": "cpu"},
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            **spec,
        },
    }


def _ended(core: Any, namespace: str, name: str, timeout_s: float = 90) -> Any:
    def done() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        return pod.status.phase in ("Succeeded", "Failed") and pod

    return wait_for(done, timeout_s=timeout_s, interval_s=0.2)


def _ready(core: Any, namespace: str, name: str) -> Any:
    def ready() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        return conditions.get("Ready") == "True" and pod

    return wait_for(ready, timeout_s=60, interval_s=0.2)


def test_the_node_is_a_real_kubelet_with_the_cpu_pool_label(api_client: Any) -> None:
    node = client.CoreV1Api(api_client).read_node(NODE_NAME)
    assert node.metadata.labels["trainkube.io/node-pool"] == "cpu"
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == NODE_ADDRESS
    assert int(node.status.allocatable["cpu"]) >= 1
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"


def test_a_pod_runs_on_the_node_and_kubectl_logs_shows_its_output(
    api_client: Any, local_cluster: LocalCluster, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    started = time.monotonic()
    core.create_namespaced_pod(namespace, _pod("hello", probe_image, "echo", "hello", "node"))
    pod = _ended(core, namespace, "hello")
    print(f"create -> Succeeded in {time.monotonic() - started:.1f} s")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == NODE_NAME
    assert pod.status.pod_ip.startswith(NODE_POD_CIDR.rsplit(".", 1)[0] + ".")
    logs = local_cluster.kubectl("logs", "-n", namespace, "hello")
    assert logs == "hello node\n"


def test_a_pod_over_its_memory_limit_is_oom_killed(
    api_client: Any, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    limits = {"resources": {"limits": {"memory": "128Mi"}}}
    core.create_namespaced_pod(
        namespace, _pod("greedy", probe_image, "alloc", "400", container=limits)
    )
    pod = _ended(core, namespace, "greedy")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_two_pods_listen_on_the_same_port_each_in_its_own_network(
    api_client: Any, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    probe = {"readinessProbe": {"tcpSocket": {"port": 29500}, "periodSeconds": 1}}
    for name in ("rank-0", "rank-1"):
        core.create_namespaced_pod(
            namespace, _pod(name, probe_image, "listen", "29500", container=probe)
        )
    ready = [_ready(core, namespace, name) for name in ("rank-0", "rank-1")]
    assert len({pod.status.pod_ip for pod in ready}) == 2
    assert all(pod.status.container_statuses[0].restart_count == 0 for pod in ready)
    # And each answers on its own address.
    for index, pod in enumerate(ready):
        name = f"client-{index}"
        core.create_namespaced_pod(
            namespace, _pod(name, probe_image, "connect", pod.status.pod_ip, "29500")
        )
        assert _ended(core, namespace, name).status.phase == "Succeeded"


def test_a_pod_reaches_another_by_its_headless_service_name(
    api_client: Any, local_cluster: LocalCluster, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "workers"},
            "spec": {
                "clusterIP": "None",
                "selector": {"group": "workers"},
                "ports": [{"port": 29500}],
            },
        },
    )
    server = _pod(
        "server",
        probe_image,
        "listen",
        "29500",
        labels={"group": "workers"},
        hostname="worker-0",
        subdomain="workers",
    )
    core.create_namespaced_pod(namespace, server)
    name = f"worker-0.workers.{namespace}.svc.cluster.local"
    core.create_namespaced_pod(namespace, _pod("client", probe_image, "connect", name, "29500"))
    pod = _ended(core, namespace, "client")
    logs = local_cluster.kubectl("logs", "-n", namespace, "client")
    assert pod.status.phase == "Succeeded", logs
    assert "answer: hello from worker-0" in logs


def test_a_pod_reaches_the_apiserver_through_the_kubernetes_service(
    api_client: Any, local_cluster: LocalCluster, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, _pod("api", probe_image, "apiserver"))
    pod = _ended(core, namespace, "api")
    logs = local_cluster.kubectl("logs", "-n", namespace, "api")
    assert pod.status.phase == "Succeeded", logs
    service_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert f"{service_ip}:443 201 " in logs
    assert f'"username":"system:serviceaccount:{namespace}:default"' in logs


def test_a_claim_gets_a_folder_on_the_node_that_goes_with_the_claim(
    api_client: Any, local_cluster: LocalCluster, namespace: str, probe_image: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "checkpoints"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    claim = wait_for(
        lambda: (
            (
                c := core.read_namespaced_persistent_volume_claim("checkpoints", namespace)
            ).status.phase
            == "Bound"
            and c
        )
    )
    assert claim.spec.storage_class_name == "local"  # the default class
    volume = core.read_persistent_volume(claim.spec.volume_name)
    folder = Path(volume.spec.host_path.path)
    assert folder.parent == local_cluster.layout.volumes_dir
    terms = volume.spec.node_affinity.required.node_selector_terms
    assert terms[0].match_expressions[0].values == [NODE_NAME]
    # The trainer images' user (1000) may write into it.
    writer = _pod(
        "writer",
        probe_image,
        "write",
        "/data/written",
        "step 1",
        container={
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        },
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "checkpoints"}}],
    )
    core.create_namespaced_pod(namespace, writer)
    assert _ended(core, namespace, "writer").status.phase == "Succeeded"
    assert (folder / "written").read_text() == "step 1\n"
    assert (folder / "written").stat().st_uid == 1000

    core.delete_namespaced_pod("writer", namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, timeout_s=60)
    core.delete_namespaced_persistent_volume_claim("checkpoints", namespace)
    wait_for(lambda: not folder.exists(), timeout_s=60)
    wait_for(
        lambda: (
            not [
                v
                for v in core.list_persistent_volume().items
                if v.metadata.name == claim.spec.volume_name
            ]
        ),
        timeout_s=30,
    )


@pytest.fixture
def saved_pki(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[Path]:
    """A copy of the cluster's certificates, to start it again with after a `down`, so the
    session's clients (and the processes started with them) still talk to it; should the test
    fail between `down` and `up`, the cluster comes back anyway."""
    saved = tmp_path / "pki"
    shutil.copytree(local_cluster.layout.pki_dir, saved)
    yield saved
    if not local_cluster.layout.pki_dir.exists():
        shutil.copytree(saved, local_cluster.layout.pki_dir)
        local_cluster.up()


def test_down_leaves_nothing_of_the_node_and_up_starts_it_again(
    api_client: Any,
    local_cluster: LocalCluster,
    crds: LocalCluster,
    operator: OperatorProcess,
    saved_pki: Path,
    probe_image: str,
) -> None:
    """Last in this module: the session's cluster goes down and comes back (same
    certificates, CRDs applied again, the images this session loaded loaded again, the
    session's operator restarted), so later tests find it as it was."""
    layout = local_cluster.layout
    baseline = hoststate.load(layout)
    assert baseline is not None
    # Something of everything the node makes: a running pod (veth, iptables chains, mounts,
    # cgroups) beside the `kubernetes` Service (kube-proxy's chains).
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod("default", _pod("down-test", probe_image, "sleep"))
    _ready(core, "default", "down-test")
    assert realnode.leftovers(layout, baseline)  # the check sees a running node

    loaded = realnode.imported_archives()
    assert loaded  # the probe image's archive, at least
    operator.stop()
    local_cluster.down()
    assert realnode.leftovers(layout, baseline) == []
    assert not layout.state_dir.exists()

    shutil.copytree(saved_pki, layout.pki_dir)
    started = time.monotonic()
    assert local_cluster.up()
    print(f"up again in {time.monotonic() - started:.1f} s")
    local_cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    local_cluster.wait_condition("Established", *[f"crd/{kind.crd_name}" for kind in KINDS])
    operator.start()
    results = local_cluster.import_images(loaded)
    # containerd's image store is in the cache: what was loaded before `down` is still there.
    assert all(result.skipped for result in results)
    # A fresh etcd: the controller-manager creates the namespace's default ServiceAccount a
    # moment after `up`, and a pod created before it is refused.
    local_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", "default")
    core.create_namespaced_pod("default", _pod("after-up", probe_image, "echo", "again"))
    assert _ended(core, "default", "after-up").status.phase == "Succeeded"
    core.delete_namespaced_pod("after-up", "default")
