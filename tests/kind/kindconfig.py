"""The kind configuration a cluster is created with: the user's kind-config.yaml plus what this
setup needs, derived (never written back), so that file stays the user's.

Every node gets the claims' folder mounted at the same path (the volumes are that folder's
subfolders, so a claim reads the same on every node, as on a shared file system); the kubelet
may run on cgroup v1 (`failCgroupV1: false`; Kubernetes 1.36 refuses it otherwise). A locally
built node image also turns kind's own pod network off (kindnetd is an image from a registry;
`podnet` configures one from the host instead) and asks kubeadm for the etcd and CoreDNS tags
that image holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class LocalImage:
    """What kubeadm must be told about a locally built node image (its labels)."""

    etcd_tag: str
    coredns_tag: str


def kubeadm_patches(local: LocalImage | None) -> list[str]:
    patches = [yaml.safe_dump({"kind": "KubeletConfiguration", "failCgroupV1": False})]
    if local is not None:
        cluster = {
            "kind": "ClusterConfiguration",
            "etcd": {"local": {"imageTag": local.etcd_tag}},
            "dns": {"imageTag": local.coredns_tag},
        }
        patches.append(yaml.safe_dump(cluster))
    return patches


def derive(user: dict[str, Any], *, volumes_dir: Path, local: LocalImage | None) -> dict[str, Any]:
    """The user's configuration with the shared folder, the kubelet patch and, for a local
    node image, no default CNI and kubeadm's image tags."""
    config = copy.deepcopy(user)
    mount = {"hostPath": str(volumes_dir), "containerPath": str(volumes_dir)}
    for node in config.setdefault("nodes", [{"role": "control-plane"}]):
        mounts = node.setdefault("extraMounts", [])
        if mount not in mounts:
            mounts.append(mount)
    config["kubeadmConfigPatches"] = [
        *config.get("kubeadmConfigPatches", []),
        *kubeadm_patches(local),
    ]
    if local is not None:
        config.setdefault("networking", {})["disableDefaultCNI"] = True
    return config
