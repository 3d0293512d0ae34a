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

from trainkube.api.training import Precision


@dataclass(frozen=True)
class DeviceChoice:
    """How one rank trains on its device: the precision and the collective backend."""

    precision: Precision
    backend: str  # "nccl" on CUDA, "gloo" on the CPU


def device_choice(*, requested: Precision, cuda: bool, bf16_supported: bool) -> DeviceChoice:
    """The precision and backend for a rank: on the CPU fp32 and gloo (DeepSpeed refuses fp16
    there and bf16 runs ~10x slower); on a GPU nccl and the job's precision, except that bf16
    on a GPU without it (before Ampere) becomes fp16 with dynamic loss scaling. The planner's
    bytes per parameter are the same for both 16-bit formats, so the plan still holds."""
    if not cuda:
        return DeviceChoice(Precision.FP32, "gloo")
    if requested is Precision.BF16 and not bf16_supported:
        return DeviceChoice(Precision.FP16, "nccl")
    return DeviceChoice(requested, "nccl")


def this_device(requested: Precision) -> DeviceChoice:
    """`device_choice` for the machine this process runs on."""
    cuda = torch.cuda.is_available()
    return device_choice(
        requested=requested, cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported()
    )


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
    # The backend follows the device alone (nccl on CUDA, gloo on the CPU).
    deepspeed.init_distributed(dist_backend=this_device(Precision.FP32).backend)
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


def finish() -> None:
    """Leave the process group after an outcome every rank reached together (done, diverged):
    the ranks then exit with their exit code, not with an abort from a collective backend's
    threads torn down while the interpreter exits ("terminate called without an active
    exception", exit 250), which the operator would take for a crash."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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


def shared_memory_reduce(device: torch.device, environ: Mapping[str, str]) -> bool:
    """Whether a small sum over ranks goes through DeepSpeed's shared-memory all-reduce: on the
    CPU with every rank of the world on this machine (the deepspeed launcher's LOCAL_SIZE is
    the world size; DeepSpeed sets its shared memory up only then, and its op must not be
    called otherwise)."""
    world = environ.get("WORLD_SIZE")
    return device.type == "cpu" and world is not None and environ.get("LOCAL_SIZE") == world


def means_over_ranks(totals: list[torch.Tensor], count: float) -> list[float]:
    """sum(totals[i]) / sum(count) over all ranks for each i, in one all-reduce and one copy
    to the host (`totals` are 0-d tensors on this rank's device). Every rank gets the same
    numbers: an all-reduce leaves one result everywhere.

    It runs at every loss check, so on the CPU with all ranks on one machine it goes through
    DeepSpeed's shared-memory all-reduce (float32, the precision its op sums in): after a
    step, gloo took 2.3 ms at the median for these few numbers on a 2-core VM (at one check
    every 10 steps, about 2% of the tiny model's time under ZeRO-0), the shared memory 0.013
    ms. Elsewhere the process group's (NCCL on GPUs, gloo between machines) in float64."""
    if not totals:
        return []
    device = totals[0].device
    shared = shared_memory_reduce(device, os.environ)
    dtype = torch.float32 if shared else torch.float64
    counted = torch.tensor([count], dtype=dtype, device=device)
    packed = torch.cat([torch.stack(totals).to(dtype), counted])
    if shared:
        import deepspeed.comm  # noqa: PLC0415 - loaded with deepspeed by start()

        # In place; it falls back to the process group's all-reduce itself where DeepSpeed
        # could not build its op or the CPU lacks the vector instructions its kernel needs.
        deepspeed.comm.inference_all_reduce(packed)
    else:
        torch.distributed.all_reduce(packed)
    means = (packed[:-1] / packed[-1]).tolist()
    return [float(mean) for mean in means]


def rng_state() -> dict[str, Any]:
    """This process's random number generators: the CPU's, and every CUDA device's when there
    are any (dropout masks on a GPU draw from the CUDA generator)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    """Restore what `rng_state` returned (or a bare CPU state, as older checkpoints hold). CUDA
    states are restored only where CUDA is available and the device count matches."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
