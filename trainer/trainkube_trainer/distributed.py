"""The distributed environment torchrun (or `deepspeed --no_ssh`) sets, and its start-up.

On a machine without a GPU the same code runs on the CPU: gloo instead of NCCL, fp32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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
    env = DistEnv(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        on_cpu=on_cpu,
    )
    if on_cpu:
        release_shm_segment(env.rank)
    return env


SHM_DIR = Path("/dev/shm")


def shm_segment(rank: int, environ: Mapping[str, str]) -> Path:
    """The POSIX shared-memory segment DeepSpeed's CPU backend creates for `rank` (its
    shm_comm op, `deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>`)."""
    address, port = environ.get("MASTER_ADDR", ""), environ.get("MASTER_PORT", "")
    return SHM_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{address}_{port}_{rank}"


def release_shm_segment(rank: int) -> None:
    """Unlink this rank's DeepSpeed shared-memory segment once every rank has mapped it.

    On the CPU, DeepSpeed maps a 66 MB segment per rank when all ranks share one machine and
    never unlinks it, so each run (and each killed run) would leave 66 MB per rank in
    /dev/shm, which is memory, until the machine restarts. After the barrier every rank has
    opened every other rank's segment; the mappings live on until the processes end, and the
    name is gone, so nothing is left behind however the run ends from here on.
    """
    torch.distributed.barrier()
    shm_segment(rank, os.environ).unlink(missing_ok=True)


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
