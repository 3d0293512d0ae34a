"""The local cluster's pure parts: component flags, kubeconfigs, GPU node manifests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.localcluster import components, nodes

LAYOUT = components.Layout(state_dir=Path("/state"))
BIN = Path("/bin-dir")


def _flags(component: components.Component) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in component.argv[1:] if "=" in arg)


def test_components_start_in_dependency_order_from_the_bin_dir() -> None:
    plane = components.control_plane(LAYOUT, BIN, Path("/kwok.yaml"))
    assert tuple(c.name for c in plane) == components.COMPONENT_NAMES
    assert all(Path(c.argv[0]) == BIN / c.name for c in plane)


def test_every_component_listens_on_loopback_only() -> None:
    for component in components.control_plane(LAYOUT, BIN, Path("/kwok.yaml")):
        for flag, value in _flags(component).items():
            if flag.endswith(("-urls", "bind-address", "advertise-address")):
                hosts = re.findall(r"(?:https?://)?([^:/,]+)(?::\d+)?", value)
                assert set(hosts) == {"127.0.0.1"}, (component.name, flag, value)


def test_apiserver_enforces_rbac_and_tolerates_gpu_taints_by_admission() -> None:
    apiserver = next(
        c for c in components.control_plane(LAYOUT, BIN, Path("/k")) if c.name == "kube-apiserver"
    )
    flags = _flags(apiserver)
    assert "RBAC" in flags["authorization-mode"].split(",")
    assert "ExtendedResourceToleration" in flags["enable-admission-plugins"].split(",")
    assert flags["etcd-servers"] == LAYOUT.etcd_url
    assert apiserver.health_needs_client_cert


def test_controller_manager_signs_service_account_tokens_with_the_apiserver_key_pair() -> None:
    plane = {c.name: _flags(c) for c in components.control_plane(LAYOUT, BIN, Path("/k"))}
    private = Path(plane["kube-controller-manager"]["service-account-private-key-file"])
    public = Path(plane["kube-apiserver"]["service-account-key-file"])
    assert private.parent == public.parent == LAYOUT.pki_dir
    assert (private.stem, public.stem) == ("sa", "sa")


def test_kubeconfig_points_at_the_local_server_with_the_identity_certificate() -> None:
    document = components.kubeconfig_document(layout=LAYOUT, identity="scheduler")
    cluster = document["clusters"][0]["cluster"]  # type: ignore[index]
    user = document["users"][0]["user"]  # type: ignore[index]
    assert cluster == {
        "server": "https://127.0.0.1:16443",
        "certificate-authority": "/state/pki/ca.crt",
    }
    assert user == {
        "client-certificate": "/state/pki/scheduler.crt",
        "client-key": "/state/pki/scheduler.key",
    }


def test_gpu_nodes_declare_gpu_capacity_and_are_tainted_for_gpu_pods_only() -> None:
    pool = nodes.GpuNodePool(name="h100", count=3, gpus=8)
    manifests = nodes.gpu_node_manifests(pool)
    assert [m["metadata"]["name"] for m in manifests] == [
        "h100-node-0",
        "h100-node-1",
        "h100-node-2",
    ]
    for manifest in manifests:
        assert manifest["status"]["capacity"][nodes.GPU_RESOURCE] == "8"
        assert manifest["status"]["allocatable"] == manifest["status"]["capacity"]
        assert manifest["metadata"]["annotations"] == {nodes.FAKE_NODE_ANNOTATION: "fake"}
        assert manifest["spec"]["taints"] == [
            {"key": nodes.GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
        ]


@pytest.mark.parametrize(
    ("exit_code", "reason", "expected"),
    [
        (0, None, {nodes.EXIT_CODE_ANNOTATION: "0"}),
        (
            137,
            "OOMKilled",
            {nodes.EXIT_CODE_ANNOTATION: "137", nodes.REASON_ANNOTATION: "OOMKilled"},
        ),
    ],
)
def test_finish_annotations_carry_exit_code_and_reason(
    exit_code: int, reason: str | None, expected: dict[str, str]
) -> None:
    assert nodes.finish_annotations(exit_code=exit_code, reason=reason) == expected


@pytest.mark.parametrize("exit_code", [-1, 256])
def test_finish_annotations_refuse_exit_codes_a_process_cannot_have(exit_code: int) -> None:
    with pytest.raises(ValueError, match=r"exit_code must be within 0\.\.255"):
        nodes.finish_annotations(exit_code=exit_code)
