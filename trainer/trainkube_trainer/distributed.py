"""The distributed environment torchrun (or `deepspeed --no_ssh`) sets, and its start-up.

On a machine without a GPU the same code runs on the CPU: gloo instead of NCCL, fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    on_cpu: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start() -> DistEnv:
    """Initialise torch.distributed through DeepSpeed (one process is a world of one)."""
    import deepspeed  # noqa: PLC0415 - heavy; only training and evaluation need it

    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    on_cpu = not torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    if not on_cpu:
        torch.cuda.set_device(local_rank)
    return DistEnv(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        on_cpu=on_cpu,
    )


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(total: float, count: float, device: torch.device) -> float:
    """sum(total) / sum(count) over all ranks."""
    pair = torch.tensor([total, count], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(pair)
    return float(pair[0] / pair[1]) if pair[1] else float("nan")
