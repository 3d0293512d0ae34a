"""The hardware a job asks for and declares: nodes, GPUs, the memory of each GPU and node, and
local NVMe. The planner fits the job into the declared memory, so these numbers matter before
any pod exists.
"""

from __future__ import annotations

from pydantic import Field

from trainkube.api.base import ApiModel, CpuQuantity, Quantity, memory


class Nvme(ApiModel):
    """Local NVMe for ZeRO-Infinity offload."""

    path: str = Field(
        default="/local_nvme",
        description="where the NVMe is mounted in the worker pods.",
        pattern=r"^/.*$",
        max_length=1024,
    )
    size_per_node: Quantity = Field(
        description="usable NVMe capacity per node, with a unit, e.g. '3Ti'; at least 1Gi.",
        json_schema_extra=memory("resources.nvme.sizePerNode", at_least="1Gi", example="3Ti"),
    )


class Resources(ApiModel):
    """The hardware the job runs on. gpuMemory is the memory per GPU the job *declares*: the
    planner picks the ZeRO stage and offload so the job fits in it with a safety margin."""

    nodes: int = Field(default=1, description="number of worker pods (nodes).", ge=1, le=4096)
    gpus_per_node: int = Field(
        default=1,
        description="GPUs per worker pod; 0 runs on the CPU (the CPU-fallback image).",
        ge=0,
        le=64,
    )
    gpu_memory: Quantity = Field(
        default="80Gi",
        description="memory of each GPU, with a unit, e.g. '80Gi' for an H100 80 GB; at least "
        "1Gi (a bare number would be bytes).",
        json_schema_extra=memory(
            "resources.gpuMemory", at_least="1Gi", example="80Gi for an 80 GB GPU"
        ),
    )
    cpu_memory_per_node: Quantity = Field(
        default="64Gi",
        description="host memory each worker pod may use (its memory request and limit), with a "
        "unit, e.g. '64Gi'; at least 1Gi. CPU offload must fit in it.",
        json_schema_extra=memory("resources.cpuMemoryPerNode", at_least="1Gi", example="64Gi"),
    )
    cpus_per_node: CpuQuantity = Field(
        default="8",
        description="CPU cores for each worker pod (its cpu request and limit), e.g. '8', or "
        "'500m' for half a core; a CPU worker runs as many OpenMP threads as whole cores, at "
        "least one.",
    )
    nvme: Nvme | None = Field(
        default=None, description="local NVMe per node, which allows offload to NVMe."
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        description="extended resource name of the GPUs in the cluster.",
        max_length=253,
    )
