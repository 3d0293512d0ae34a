"""Fake GPU nodes for the local cluster, played by KWOK.

The nodes are real Node objects with declared capacity (CPU, memory, `nvidia.com/gpu`) that the
real scheduler places pods on; KWOK keeps them Ready (node leases) and moves the pods bound to
them to Running. Nothing runs on them: a test decides how a pod ends by annotating it
(`finish_annotations`), and KWOK then writes the terminated container state the way a kubelet
would, exit code and reason (`OOMKilled`, `Error`, ...) included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"

# The annotations our KWOK stage (kwok-stages.yaml) reacts to.
EXIT_CODE_ANNOTATION = "kwok.trainkube.io/exit-code"
REASON_ANNOTATION = "kwok.trainkube.io/reason"


@dataclass(frozen=True)
class GpuNodePool:
    """A set of identical GPU nodes, shaped like a common 8 x H100 80 GB server by default."""

    name: str = "gpu"
    count: int = 4
    gpus: int = 8
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    gpu_memory_mib: int = 81559
    cpu: str = "192"
    memory: str = "2Ti"
    ephemeral_storage: str = "28Ti"
    max_pods: int = 110

    def node_names(self) -> list[str]:
        return [f"{self.name}-node-{index}" for index in range(self.count)]


def gpu_node_manifests(pool: GpuNodePool) -> list[dict[str, Any]]:
    """Node objects for `pool`, with status capacity set as a kubelet would report it."""
    resources = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "ephemeral-storage": pool.ephemeral_storage,
        "pods": str(pool.max_pods),
        GPU_RESOURCE: str(pool.gpus),
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    "trainkube.io/node-pool": pool.name,
                    # The labels NVIDIA's GPU feature discovery puts on real GPU nodes.
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": pool.gpu_product,
                    "nvidia.com/gpu.count": str(pool.gpus),
                    "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
                },
            },
            "spec": {
                # As on real GPU clusters; pods that request GPUs get the toleration from the
                # ExtendedResourceToleration admission plugin.
                "taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}],
            },
            "status": {"capacity": resources, "allocatable": resources},
        }
        for name in pool.node_names()
    ]


def finish_annotations(*, exit_code: int, reason: str | None = None) -> dict[str, str]:
    """Annotations that make KWOK end a running pod's containers with `exit_code`.

    Exit code 0 ends the pod `Succeeded` (reason `Completed` unless given); any other code ends
    it `Failed` (reason `Error` unless given, e.g. `OOMKilled` with 137).
    """
    if exit_code < 0 or exit_code > 255:
        raise ValueError(f"exit_code must be within 0..255, got {exit_code}")
    annotations = {EXIT_CODE_ANNOTATION: str(exit_code)}
    if reason:
        annotations[REASON_ANNOTATION] = reason
    return annotations
