"""The pure parts of the kind setup: the derived kind configuration and the pod network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.kind import kindconfig, podnet
from tests.kind.settings import USER_CONFIG

pytestmark = pytest.mark.unit
VOLUMES = Path("/cache/kind/run/volumes")


def test_derived_config_keeps_the_users_nodes_and_mounts_the_claims_folder_into_each() -> None:
    user = yaml.safe_load(USER_CONFIG.read_text())
    derived = kindconfig.derive(user, volumes_dir=VOLUMES, local=None)
    assert [n["role"] for n in derived["nodes"]] == [n["role"] for n in user["nodes"]]
    for node in derived["nodes"]:
        assert {"hostPath": str(VOLUMES), "containerPath": str(VOLUMES)} in node["extraMounts"]
    assert "extraMounts" not in user["nodes"][0]  # the user's file is never changed
    assert "networking" not in derived  # kind's own CNI with a published image
    assert [yaml.safe_load(p)["kind"] for p in derived["kubeadmConfigPatches"]] == [
        "KubeletConfiguration"
    ]


def test_a_local_node_image_turns_kinds_cni_off_and_pins_etcd_and_coredns() -> None:
    local = kindconfig.LocalImage(etcd_tag="v3.6.16", coredns_tag="v1.15.0")
    derived = kindconfig.derive({"kind": "Cluster"}, volumes_dir=VOLUMES, local=local)
    assert derived["networking"]["disableDefaultCNI"] is True
    patches = [yaml.safe_load(p) for p in derived["kubeadmConfigPatches"]]
    assert patches[0] == {"kind": "KubeletConfiguration", "failCgroupV1": False}
    assert patches[1]["etcd"]["local"]["imageTag"] == "v3.6.16"
    assert patches[1]["dns"]["imageTag"] == "v1.15.0"


def test_each_node_routes_the_other_nodes_pod_subnets_through_their_addresses() -> None:
    nodes = {
        "items": [
            {
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]},
            }
            for name, cidr, address in [
                ("w2", "10.244.2.0/24", "10.89.0.4"),
                ("cp", "10.244.0.0/24", "10.89.0.2"),
            ]
        ]
    }
    cp, w2 = podnet.node_nets(nodes)
    commands = podnet.node_commands(cp, [w2], "10.244.0.0/16")
    assert commands[0] == ["ip", "route", "replace", "10.244.2.0/24", "via", "10.89.0.4"]
    assert "MASQUERADE" in commands[-1]
    bridge = podnet.cni_config(cp.pod_cidr)["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]
