"""The memory planner: DeepSpeed's estimators agree, the table of cases picks what it must, and
the properties hold (more memory never a higher stage; the global batch always exact)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from trainkube.api.model import ArchitectureFamily
from trainkube.api.training import Precision
from trainkube.planner import Device, Overrides, PlanError, PlanRequest, Rung, Shape, plan
from trainkube.planner.escalate import escalate
from trainkube.planner.memory import BUFFER_FACTOR, GiB, ModelStates, model_states
from trainkube.planner.shape import default_intermediate

os.environ.setdefault("DS_ACCELERATOR", "cpu")
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import (
    estimate_zero2_model_states_mem_needs,
)

LLAMA, NEOX = ArchitectureFamily.LLAMA, ArchitectureFamily.GPT_NEOX
MODELS = {
    "neox-125m": Shape(NEOX, 12, 768, 12, 12, 3072, 50304),
    "neox-1.3b": Shape(NEOX, 24, 2048, 16, 16, 8192, 50304),
    "llama-7b": Shape(LLAMA, 32, 4096, 32, 32, 11008, 32000),
    "llama-13b": Shape(LLAMA, 40, 5120, 40, 40, 13824, 32000),
    "llama3-8b": Shape(LLAMA, 32, 4096, 32, 8, 14336, 128256),
    "llama-70b": Shape(LLAMA, 80, 8192, 64, 8, 28672, 32000),
}
REPO = Path(__file__).resolve().parents[2]


def test_parameter_counts_match_the_published_checkpoints() -> None:
    assert MODELS["llama-7b"].parameters() == 6_738_415_616
    assert MODELS["llama-13b"].parameters() == 13_015_864_320
    assert MODELS["llama-70b"].parameters() == 68_976_648_192
    assert MODELS["llama3-8b"].parameters() == 8_030_261_248
    assert MODELS["llama-7b"].largest_layer_parameters() == 131_072_000


def test_default_mlp_width_follows_the_llama_rule() -> None:
    assert default_intermediate(LLAMA, 4096) == 11008
    assert default_intermediate(LLAMA, 5120) == 13824
    assert default_intermediate(NEOX, 768) == 3072


def test_lora_counts_rank_times_in_plus_out_per_adapted_module() -> None:
    shape = MODELS["llama-7b"]
    assert shape.lora_parameters(rank=8, targets=("q_proj", "v_proj")) == 32 * 8 * 4 * 4096
    with pytest.raises(ValueError, match="unknown LoRA target modules"):
        shape.lora_parameters(rank=8, targets=("attn",))


GRID = [
    (name, gpus, nodes)
    for name in ("neox-125m", "neox-1.3b", "llama-7b", "llama-13b", "llama-70b")
    for gpus, nodes in ((1, 1), (8, 1), (8, 2), (8, 8))
]


def _states(name: str, rung: Rung, gpus: int, nodes: int) -> tuple[int, int]:
    shape = MODELS[name]
    states = model_states(
        rung=rung,
        parameters=shape.parameters(),
        trainable=shape.parameters(),
        largest_layer=shape.largest_layer_parameters(),
        nodes=nodes,
        gpus_per_node=gpus,
        mixed_precision=True,
    )
    return states.cpu_per_node, states.gpu_total


@pytest.mark.parametrize(("name", "gpus", "nodes"), GRID)
def test_zero2_model_states_agree_with_deepspeeds_estimator(
    name: str, gpus: int, nodes: int
) -> None:
    total = MODELS[name].parameters()
    for offload, rung in ((False, Rung(2)), (True, Rung(2, Device.CPU))):
        expected = estimate_zero2_model_states_mem_needs(
            total, gpus, nodes, cpu_offload=offload, additional_buffer_factor=BUFFER_FACTOR
        )
        assert _states(name, rung, gpus, nodes) == expected, rung


@pytest.mark.parametrize(("name", "gpus", "nodes"), GRID)
def test_zero3_model_states_agree_with_deepspeeds_estimator(
    name: str, gpus: int, nodes: int
) -> None:
    shape = MODELS[name]
    for offload, offload_params, rung in (
        (False, False, Rung(3)),
        (True, False, Rung(3, Device.CPU)),
        (True, True, Rung(3, Device.CPU, Device.CPU)),
    ):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            shape.parameters(),
            shape.largest_layer_parameters(),
            gpus,
            nodes,
            cpu_offload=offload,
            cpu_offload_params=offload_params,
            zero_init=True,
            additional_buffer_factor=BUFFER_FACTOR,
        )
        assert _states(name, rung, gpus, nodes) == (cpu, gpu), rung


def _request(
    name: str,
    *,
    nodes: int = 1,
    gpus: int = 8,
    gpu_gib: float = 80,
    cpu_gib: float = 1024,
    nvme_gib: float = 0,
    seq: int = 4096,
    batch: int | None = None,
    lora_rank: int | None = None,
    overrides: Overrides | None = None,
) -> PlanRequest:
    shape = MODELS[name]
    lora = (
        shape.lora_parameters(rank=lora_rank, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
        if lora_rank
        else None
    )
    return PlanRequest(
        shape=shape,
        sequence_length=seq,
        global_batch_size=batch or 64 * nodes * max(gpus, 1),
        nodes=nodes,
        gpus_per_node=gpus,
        gpu_memory=int(gpu_gib * GiB),
        cpu_memory_per_node=int(cpu_gib * GiB),
        nvme_per_node=int(nvme_gib * GiB),
        lora_parameters=lora,
        overrides=overrides or Overrides(),
    )


NONE, CPU, NVME = Device.NONE, Device.CPU, Device.NVME
# id, request, expected (stage, optimizer offload, parameter offload); why, in one line.
CASES = [
    # 20 bytes per parameter (stage 0) only fits small models.
    ("125m-1x16", _request("neox-125m", gpus=1, gpu_gib=16, seq=2048), (0, NONE, NONE)),
    ("125m-8x80", _request("neox-125m", gpu_gib=80, seq=2048), (0, NONE, NONE)),
    ("1.3b-1x80", _request("neox-1.3b", gpus=1, gpu_gib=80, seq=2048), (0, NONE, NONE)),
    ("1.3b-8x40", _request("neox-1.3b", gpu_gib=40, seq=2048), (0, NONE, NONE)),
    # 1.3B at 20 B/param is 28 GB: on 24 GB GPUs the optimizer must be partitioned.
    ("1.3b-8x24", _request("neox-1.3b", gpu_gib=24, seq=2048), (1, NONE, NONE)),
    # 1.3B on one 24 GB GPU: nothing to partition over; the optimizer goes to the CPU at
    # stage 2 (ZeRO-Offload), not stage 3, which would only add gathers.
    ("1.3b-1x24", _request("neox-1.3b", gpus=1, gpu_gib=24, seq=2048), (2, CPU, NONE)),
    ("1.3b-1x16", _request("neox-1.3b", gpus=1, gpu_gib=16, seq=2048), (2, CPU, NONE)),
    # 7B: stage 1 holds 4 + 16/8 = 6 B/param = 40 GB on 8 ranks.
    ("7b-8x80", _request("llama-7b", gpu_gib=80), (1, NONE, NONE)),
    ("7b-8x141", _request("llama-7b", gpu_gib=141), (1, NONE, NONE)),
    ("7b-32x80", _request("llama-7b", nodes=4, gpu_gib=80), (1, NONE, NONE)),
    # Stage 2 drops the 16-bit gradients: 2 + 18/8 = 4.25 B/param = 28.6 GB.
    ("7b-8x40", _request("llama-7b", gpu_gib=40), (2, NONE, NONE)),
    # ...but 48 GB is enough for stage 1 once activations are recomputed.
    ("7b-8x48", _request("llama-7b", gpu_gib=48), (1, NONE, NONE)),
    # Stage 3: 18/8 B/param + one gathered layer.
    ("7b-8x24", _request("llama-7b", gpu_gib=24), (3, NONE, NONE)),
    ("7b-16x16", _request("llama-7b", nodes=2, gpu_gib=16), (3, NONE, NONE)),
    ("7b-8x16", _request("llama-7b", gpu_gib=16), (3, CPU, NONE)),
    ("7b-1x80", _request("llama-7b", gpus=1, gpu_gib=80, seq=2048), (2, CPU, NONE)),
    # One 16 GB GPU cannot hold 7B's 16-bit weights (13.5 GB) and activations: stage 3 is
    # taken to move the parameters off the GPU too.
    ("7b-1x16", _request("llama-7b", gpus=1, gpu_gib=16, seq=2048), (3, CPU, CPU)),
    (
        "7b-lora-1x24",
        _request("llama-7b", gpus=1, gpu_gib=24, seq=2048, lora_rank=16),
        (0, NONE, NONE),
    ),
    # LoRA still holds the frozen 16-bit base (13.5 GB): on 16 GB it goes to the CPU.
    (
        "7b-lora-1x16",
        _request("llama-7b", gpus=1, gpu_gib=16, seq=1024, lora_rank=16),
        (3, CPU, CPU),
    ),
    # 13B: stage 3 on 8 x 24 GB still holds 18/8 x 13B = 29 GB: the optimizer goes to the CPU;
    # on 16 GPUs stage 3 alone fits.
    ("13b-8x24", _request("llama-13b", gpu_gib=24), (3, CPU, NONE)),
    ("13b-16x24", _request("llama-13b", nodes=2, gpu_gib=24), (3, NONE, NONE)),
    ("13b-8x80", _request("llama-13b", gpu_gib=80), (2, NONE, NONE)),
    ("13b-64x80", _request("llama-13b", nodes=8, gpu_gib=80), (1, NONE, NONE)),
    # The frozen 13B base is 26 GB in 16 bits: LoRA on 24 GB GPUs partitions it (stage 3).
    ("13b-lora-8x24", _request("llama-13b", gpu_gib=24, lora_rank=16), (3, NONE, NONE)),
    # NVMe takes only what must move: the optimizer states first; the 16-bit parameters go to
    # the host when it can hold them (13B: 39 GiB of 128), to NVMe only when it cannot.
    (
        "13b-1x24-nvme",
        _request("llama-13b", gpus=1, gpu_gib=24, cpu_gib=128, nvme_gib=2048, seq=2048),
        (3, NVME, CPU),
    ),
    (
        "13b-1x24-nvme-small-host",
        _request("llama-13b", gpus=1, gpu_gib=24, cpu_gib=32, nvme_gib=2048, seq=2048),
        (3, NVME, NVME),
    ),
    # The parameters fit the GPU (26 GB of 40); the host cannot hold the optimizer (312 GB).
    (
        "13b-1x40-nvme",
        _request("llama-13b", gpus=1, gpu_gib=40, cpu_gib=64, nvme_gib=2048, seq=2048),
        (3, NVME, NONE),
    ),
    (
        "13b-8x24-nvme",
        _request("llama-13b", gpu_gib=24, cpu_gib=128, nvme_gib=2048),
        (3, NVME, NONE),
    ),
    # 8B with a 128K vocabulary.
    ("llama3-8b-8x80", _request("llama3-8b", gpu_gib=80), (1, NONE, NONE)),
    # 70B: 18/64 B/param = 19.4 GB at stage 3 on 64 GPUs.
    ("70b-64x80", _request("llama-70b", nodes=8, gpu_gib=80), (3, NONE, NONE)),
    ("70b-16x80", _request("llama-70b", nodes=2, gpu_gib=80), (3, CPU, NONE)),
    ("70b-8x24", _request("llama-70b", gpu_gib=24, cpu_gib=2048), (3, CPU, CPU)),
    ("70b-8x16", _request("llama-70b", gpu_gib=16, cpu_gib=2048, seq=2048), (3, CPU, CPU)),
    ("70b-lora-16x80", _request("llama-70b", nodes=2, gpu_gib=80, lora_rank=16), (3, NONE, NONE)),
    # 138 GB of frozen 16-bit weights do not fit a 141 GB GPU with activations and margin.
    ("70b-lora-8x141", _request("llama-70b", gpu_gib=141, lora_rank=16, seq=2048), (3, NONE, NONE)),
    (
        "70b-1x80-nvme",
        _request("llama-70b", gpus=1, gpu_gib=80, cpu_gib=512, nvme_gib=4096, seq=2048),
        (3, NVME, CPU),
    ),
    (
        "70b-1x80-nvme-small-host",
        _request("llama-70b", gpus=1, gpu_gib=80, cpu_gib=128, nvme_gib=4096, seq=2048),
        (3, NVME, NVME),
    ),
    (
        "70b-8x80-nvme",
        _request("llama-70b", gpu_gib=80, cpu_gib=256, nvme_gib=4096, seq=2048),
        (3, NVME, NONE),
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_planner_picks_the_expected_configuration(
    request_: PlanRequest, expected: tuple[int, Device, Device]
) -> None:
    result = plan(request_)
    assert (
        result.rung.stage,
        result.rung.offload_optimizer,
        result.rung.offload_parameters,
    ) == expected
    assert result.gpu_total <= request_.gpu_memory
    assert result.states.cpu_per_node <= request_.cpu_memory_per_node


REFUSED = [
    # 70B full on one 80 GB GPU with 512 GiB of CPU and no NVMe: parameter offload needs
    # 18 x 69B x 1.5 = 1.7 TiB of host memory.
    ("70b-1x80-no-nvme", _request("llama-70b", gpus=1, gpu_gib=80, cpu_gib=512, seq=2048)),
    ("13b-1x16-small-host", _request("llama-13b", gpus=1, gpu_gib=16, cpu_gib=64, seq=2048)),
    # A forced stage that cannot fit: 7B at stage 0 needs 20 B/param = 125 GiB per GPU.
    ("7b-forced-stage0", _request("llama-7b", gpu_gib=80, overrides=Overrides(zero_stage=0))),
    (
        "7b-forced-no-ckpt-big-micro",
        _request(
            "llama-7b",
            gpu_gib=24,
            overrides=Overrides(activation_checkpointing=False, micro_batch_size=64),
        ),
    ),
]


@pytest.mark.parametrize("request_", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_plans_that_cannot_fit_are_refused_with_the_numbers(request_: PlanRequest) -> None:
    with pytest.raises(PlanError) as refused:
        plan(request_)
    message = str(refused.value)
    assert message.startswith("the model does not fit: ")
    assert "needs" in message
    assert "declared:" in message
    assert "What would make it fit:" in message


def test_the_table_covers_every_stage_offload_and_a_refusal() -> None:
    expected = {c[2] for c in CASES}
    assert {stage for stage, _, _ in expected} == {0, 1, 2, 3}
    assert {opt for _, opt, _ in expected} == {NONE, CPU, NVME}
    assert {par for _, _, par in expected} == {NONE, CPU, NVME}
    assert len(CASES) + len(REFUSED) >= 30
    assert any(r.lora_parameters for _, r, _ in CASES)


@pytest.mark.parametrize("name", ["neox-1.3b", "llama-7b", "llama-13b", "llama-70b"])
@pytest.mark.parametrize("lora", [None, 16])
def test_more_memory_never_yields_a_higher_stage(name: str, lora: int | None) -> None:
    previous: tuple[int, int] | None = None
    for gib in (16, 20, 24, 32, 40, 48, 64, 80, 96, 141):
        try:
            result = plan(_request(name, gpu_gib=gib, cpu_gib=4096, nvme_gib=8192, lora_rank=lora))
        except PlanError:
            assert previous is None, f"{gib} GiB refused after a smaller memory fitted"
            continue
        position = (result.rung.stage, int(result.rung.offload_parameters is not NONE))
        if previous is not None:
            assert result.rung.stage <= previous[0], f"{gib} GiB"
        previous = position


@pytest.mark.parametrize("name", ["neox-1.3b", "llama-7b", "llama-13b"])
@pytest.mark.parametrize("lora", [None, 16])
def test_one_rank_takes_zero3_only_to_offload_parameters_and_more_memory_never_raises_it(
    name: str, lora: int | None
) -> None:
    previous: Rung | None = None
    for gib in (16, 20, 24, 32, 40, 48, 64, 80, 96, 141):
        request = _request(
            name, gpus=1, gpu_gib=gib, cpu_gib=4096, nvme_gib=8192, seq=2048, lora_rank=lora
        )
        try:
            rung = plan(request).rung
        except PlanError:
            assert previous is None, f"{gib} GiB refused after a smaller memory fitted"
            continue
        if rung.stage == 3:
            assert rung.offload_parameters is not NONE, f"{gib} GiB: {rung.describe()}"
        if previous is not None:
            assert rung.stage <= previous.stage, f"{gib} GiB"
        previous = rung


NVME_MOVES = {NONE: 0, CPU: 0, NVME: 1}


@pytest.mark.parametrize(
    ("name", "gpus", "gpu_gib"),
    [("llama-13b", 1, 24), ("llama-13b", 1, 40), ("llama-70b", 1, 80), ("llama-70b", 8, 24)],
)
def test_more_host_memory_never_moves_more_to_nvme(name: str, gpus: int, gpu_gib: int) -> None:
    previous: int | None = None
    for cpu_gib in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
        request = _request(
            name, gpus=gpus, gpu_gib=gpu_gib, cpu_gib=cpu_gib, nvme_gib=8192, seq=2048
        )
        try:
            result = plan(request)
        except PlanError:
            assert previous is None, f"{cpu_gib} GiB refused after a smaller host fitted"
            continue
        rung = result.rung
        moved = NVME_MOVES[rung.offload_optimizer] + NVME_MOVES[rung.offload_parameters]
        if previous is not None:
            assert moved <= previous, f"{cpu_gib} GiB: {rung.describe()}"
        if rung.offload_parameters is NVME:
            # The host could not have held the parameters instead.
            with pytest.raises(PlanError):
                plan(
                    replace(
                        request,
                        overrides=Overrides(
                            zero_stage=3, offload_optimizer=NVME, offload_parameters=CPU
                        ),
                    )
                )
        previous = moved


@pytest.mark.parametrize(("name", "gpus", "nodes"), GRID)
def test_nvme_rungs_move_the_estimators_bytes_and_no_more(name: str, gpus: int, nodes: int) -> None:
    """With the optimizer on NVMe, the GPU holds what it holds with the optimizer on the CPU,
    and NVMe plus host hold the bytes DeepSpeed's estimator puts on the host with everything
    offloaded (18 bytes per parameter), split by what moved."""
    shape = MODELS[name]
    estimated_cpu, _, _ = estimate_zero3_model_states_mem_needs(
        shape.parameters(),
        shape.largest_layer_parameters(),
        gpus,
        nodes,
        cpu_offload=True,
        cpu_offload_params=True,
        zero_init=True,
        additional_buffer_factor=BUFFER_FACTOR,
    )
    host = estimated_cpu / BUFFER_FACTOR

    def states(rung: Rung) -> ModelStates:
        return model_states(
            rung=rung,
            parameters=shape.parameters(),
            trainable=shape.parameters(),
            largest_layer=shape.largest_layer_parameters(),
            nodes=nodes,
            gpus_per_node=gpus,
            mixed_precision=True,
        )

    optimizer_cpu, optimizer_nvme = states(Rung(3, CPU)), states(Rung(3, NVME))
    assert optimizer_nvme.gpu_total == optimizer_cpu.gpu_total
    assert optimizer_nvme.nvme_per_node == pytest.approx(16 / 18 * host, rel=1e-6)
    parameters_cpu = states(Rung(3, NVME, CPU))
    assert parameters_cpu.gpu_total == states(Rung(3, CPU, CPU)).gpu_total
    moved = parameters_cpu.nvme_per_node + parameters_cpu.cpu_per_node / BUFFER_FACTOR
    assert moved == pytest.approx(host, rel=1e-6)
    assert states(Rung(3, NVME, NVME)).nvme_per_node == pytest.approx(host, rel=1e-6)


@pytest.mark.parametrize(
    ("nodes", "gpus", "batch"), [(1, 1, 7), (1, 8, 1024), (2, 8, 48), (4, 8, 96), (3, 8, 72)]
)
def test_global_batch_is_always_exact(nodes: int, gpus: int, batch: int) -> None:
    for gib in (24, 40, 80):
        result = plan(
            _request(
                "llama-7b", nodes=nodes, gpus=gpus, gpu_gib=gib, cpu_gib=4096, seq=2048, batch=batch
            )
        )
        product = (
            result.micro_batch_size * result.gradient_accumulation_steps * result.data_parallel_size
        )
        assert product == batch
        ds = result.deepspeed_config
        assert ds["train_batch_size"] == batch
        assert (
            ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * nodes * gpus
            == batch
        )


@pytest.mark.parametrize(
    "request_",
    [
        _request("neox-125m", gpus=1, gpu_gib=80, seq=2048, batch=64),
        _request("neox-125m", gpus=1, gpu_gib=16, seq=2048, batch=64),
        _request("llama-7b", gpu_gib=80, batch=256),
    ],
    ids=["125m-80g", "125m-16g", "7b-8x80"],
)
def test_largest_micro_batch_that_fits_is_chosen_recomputing_only_when_needed(
    request_: PlanRequest,
) -> None:
    result = plan(request_)
    per_rank = request_.global_batch_size // request_.ranks
    assert per_rank % result.micro_batch_size == 0
    same_rung = Overrides(
        zero_stage=result.rung.stage,
        offload_optimizer=result.rung.offload_optimizer,
        offload_parameters=result.rung.offload_parameters,
        activation_checkpointing=result.activation_checkpointing,
    )
    for larger in (
        m for m in range(result.micro_batch_size + 1, per_rank + 1) if per_rank % m == 0
    ):
        with pytest.raises(PlanError):
            plan(replace(request_, overrides=replace(same_rung, micro_batch_size=larger)))
    if result.activation_checkpointing:
        # Recomputation costs a third more compute: it is used only when nothing fits without.
        with pytest.raises(PlanError):
            plan(replace(request_, overrides=replace(same_rung, activation_checkpointing=False)))


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_with_valid_sizes() -> None:
    with pytest.raises(PlanError, match=r"globalBatchSize 100 cannot be split evenly over 16"):
        plan(_request("llama-7b", nodes=2, batch=100))


def test_forced_settings_win_when_they_fit() -> None:
    forced = Overrides(
        zero_stage=3, offload_optimizer=CPU, micro_batch_size=2, activation_checkpointing=True
    )
    result = plan(_request("llama-7b", gpu_gib=80, overrides=forced))
    assert result.rung == Rung(3, CPU)
    assert (result.micro_batch_size, result.activation_checkpointing) == (2, True)
    assert "what spec.parallelism asks for" in result.reason


def test_forced_zero_offload_at_stage_2_is_allowed() -> None:
    result = plan(
        _request("llama-7b", gpus=1, gpu_gib=80, seq=2048, overrides=Overrides(zero_stage=2))
    )
    assert result.rung == Rung(2, CPU)


def test_micro_batch_that_does_not_divide_is_refused() -> None:
    with pytest.raises(PlanError, match="microBatchSize 3 does not divide the 64 sequences"):
        plan(_request("llama-7b", overrides=Overrides(micro_batch_size=3)))


def test_nvme_offload_without_nvme_is_refused() -> None:
    with pytest.raises(PlanError, match=r"offload to nvme needs resources.nvme"):
        plan(_request("llama-7b", overrides=Overrides(offload_parameters=NVME)))


def test_cpu_jobs_train_in_fp32_without_offload() -> None:
    request = replace(
        _request("neox-125m", nodes=2, gpus=0, cpu_gib=16, seq=256, batch=16),
        precision=Precision.BF16,
    )
    result = plan(request)
    assert result.rung.offload_optimizer is NONE
    assert "bf16" not in result.deepspeed_config
    assert result.data_parallel_size == 2


def test_deepspeed_config_carries_the_plan() -> None:
    result = plan(_request("llama-70b", gpu_gib=24, cpu_gib=2048))
    zero = result.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"
    assert result.deepspeed_config["bf16"] == {"enabled": True}
    assert result.deepspeed_config["optimizer"]["type"] == "AdamW"


def test_out_of_memory_on_one_rank_escalates_from_zero_offload_to_parameter_offload() -> None:
    """After ZeRO-Offload, the next rung of a single rank is stage 3 with the parameters on the
    CPU too: stage 3 alone would only add gathers over one rank."""
    request = _request("llama-7b", gpus=1, gpu_gib=80, seq=2048, cpu_gib=4096)
    current = plan(request)
    assert current.rung == Rung(2, CPU)
    rungs = []
    while (found := escalate(request, current)) is not None:
        current, overrides, _ = found
        request = replace(request, overrides=overrides)
        rungs.append(current.rung)
    assert rungs[-1] == Rung(3, CPU, CPU)
    assert all(r.stage == 2 or r.offload_parameters is not NONE for r in rungs)
