"""The trainer's choices from the device: precision and backend (a table), the loss sum's
path over ranks, the validation
batches every rank runs, the RNG state a checkpoint holds, and the planner's agreement with
the precision the trainer trains in."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.runs import TINY
from trainkube.api.training import Precision
from trainkube.planner import PlanRequest, plan, shape_of
from trainkube.planner.memory import GiB
from trainkube_trainer.distributed import (
    DeviceChoice,
    device_choice,
    restore_rng_state,
    rng_state,
    shared_memory_reduce,
)
from trainkube_trainer.engine import precision_section
from trainkube_trainer.train import validation_batches

BF16, FP16, FP32 = Precision.BF16, Precision.FP16, Precision.FP32

# requested, cuda, the GPU has bf16 -> what the rank trains in, over which backend
CHOICES = [
    (BF16, False, False, DeviceChoice(FP32, "gloo")),  # the CPU: fp32 whatever was asked
    (FP16, False, False, DeviceChoice(FP32, "gloo")),
    (FP32, False, False, DeviceChoice(FP32, "gloo")),
    (BF16, True, True, DeviceChoice(BF16, "nccl")),  # Ampere and later
    (BF16, True, False, DeviceChoice(FP16, "nccl")),  # V100, T4: fp16 with loss scaling
    (FP16, True, True, DeviceChoice(FP16, "nccl")),
    (FP16, True, False, DeviceChoice(FP16, "nccl")),
    (FP32, True, True, DeviceChoice(FP32, "nccl")),
    (FP32, True, False, DeviceChoice(FP32, "nccl")),
]


@pytest.mark.parametrize(("requested", "cuda", "bf16", "expected"), CHOICES)
def test_precision_and_backend_follow_the_device(
    requested: Precision, cuda: bool, bf16: bool, expected: DeviceChoice
) -> None:
    assert device_choice(requested=requested, cuda=cuda, bf16_supported=bf16) == expected


def _plan_request(precision: Precision, gpus: int) -> PlanRequest:
    return PlanRequest(
        shape=shape_of(TINY),
        sequence_length=64,
        global_batch_size=16,
        nodes=1,
        gpus_per_node=gpus,
        gpu_memory=16 * GiB,
        cpu_memory_per_node=64 * GiB,
        precision=precision,
    )


@pytest.mark.parametrize("precision", [BF16, FP16, FP32])
@pytest.mark.parametrize("gpus", [0, 1])
def test_the_planners_precision_keys_are_the_ones_the_trainer_trains_in(
    precision: Precision, gpus: int
) -> None:
    ds = plan(_plan_request(precision, gpus)).deepspeed_config
    chosen = device_choice(requested=precision, cuda=gpus > 0, bf16_supported=True)
    planned = {key: ds[key] for key in ("bf16", "fp16") if key in ds}
    assert planned == precision_section(chosen.precision)


def test_fp16_instead_of_bf16_keeps_the_planners_memory() -> None:
    # A bf16 plan run as fp16 on an older GPU: both are 2-byte weights with fp32 master copies.
    bf16, fp16 = plan(_plan_request(BF16, 1)), plan(_plan_request(FP16, 1))
    assert bf16.states == fp16.states
    assert bf16.gpu_total == fp16.gpu_total


# count, ranks, micro -> every rank's batches
BATCHES = [
    (5, 2, 2, [[range(0, 2), range(4, 5)], [range(2, 4), range(5, 5)]]),
    (4, 2, 2, [[range(0, 2)], [range(2, 4)]]),
    (3, 4, 1, [[range(0, 1)], [range(1, 2)], [range(2, 3)], [range(3, 3)]]),
    (7, 1, 3, [[range(0, 3), range(3, 6), range(6, 7)]]),
]


@pytest.mark.parametrize(("count", "ranks", "micro", "expected"), BATCHES)
def test_every_rank_runs_the_same_number_of_validation_batches_covering_each_sequence_once(
    count: int, ranks: int, micro: int, expected: list[list[range]]
) -> None:
    batches = [validation_batches(count, rank=r, ranks=ranks, micro=micro) for r in range(ranks)]
    assert batches == expected
    assert len({len(mine) for mine in batches}) == 1
    assert sorted(i for mine in batches for batch in mine for i in batch) == list(range(count))


def test_the_rng_state_restores_the_cpu_generator_and_reads_a_bare_cpu_state() -> None:
    torch.manual_seed(3)
    saved, bare = rng_state(), torch.get_rng_state()
    assert saved.keys() == ({"cpu", "cuda"} if torch.cuda.is_available() else {"cpu"})
    expected = torch.rand(4)
    restore_rng_state(saved)
    assert torch.equal(torch.rand(4), expected)
    restore_rng_state(bare)  # what checkpoints written before the CUDA states hold
    assert torch.equal(torch.rand(4), expected)


def test_the_loss_sum_takes_shared_memory_only_on_the_cpu_with_every_rank_local() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    local = {"WORLD_SIZE": "2", "LOCAL_SIZE": "2"}
    assert shared_memory_reduce(cpu, local)
    assert not shared_memory_reduce(cuda, local)  # NCCL
    assert not shared_memory_reduce(cpu, {"WORLD_SIZE": "2", "LOCAL_SIZE": "1"})  # 2 machines
    assert not shared_memory_reduce(cpu, {"WORLD_SIZE": "2"})  # started without the launcher
    assert not shared_memory_reduce(cpu, {})
