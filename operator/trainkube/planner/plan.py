"""Choose the ZeRO stage, offload, activation checkpointing and micro-batch for a job.

The planner climbs `memory.ladder` (least communication first; a single data-parallel rank has
a ladder of its own) and takes the first rung on which some micro-batch fits the declared
memory with the safety margin; on that rung it takes the largest micro-batch that fits without
activation checkpointing, else with it. The global batch is always exact: micro-batch x
gradient accumulation x data-parallel ranks. Settings the user fixed (stage, offload,
checkpointing, micro-batch) narrow the search and are checked like any other: a forced plan
that cannot fit is an error with the numbers, not a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainkube.api.training import LrSchedule, Precision
from trainkube.planner.memory import (
    CONFIGURATIONS,
    Device,
    GiB,
    ModelStates,
    Rung,
    activations,
    human_bytes,
    human_count,
    ladder,
    model_states,
)
from trainkube.planner.shape import Shape

# The safety margin: a fixed allowance for the CUDA context, NCCL and the allocator's own
# use, plus a share of everything else for fragmentation.
CONTEXT_BYTES = 1 * GiB
FRAGMENTATION = 0.10
# Communication buckets (elements); DeepSpeed's defaults (5e8) cost 1 GB each at 16 bits.
BUCKET_ELEMENTS = 200_000_000


class PlanError(ValueError):
    """No plan fits (or a forced setting cannot); the message gives the numbers and remedies."""


@dataclass(frozen=True)
class Overrides:
    """What the user fixed; None means the planner chooses."""

    zero_stage: int | None = None
    offload_optimizer: Device | None = None
    offload_parameters: Device | None = None
    activation_checkpointing: bool | None = None
    micro_batch_size: int | None = None


@dataclass(frozen=True)
class Optimizer:
    """Optimizer and schedule settings that go into the DeepSpeed config."""

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    gradient_clipping: float = 1.0
    schedule: LrSchedule = LrSchedule.COSINE
    warmup_steps: int = 0
    total_steps: int = 1000
    min_lr_ratio: float = 0.1


@dataclass(frozen=True)
class PlanRequest:
    """Everything the planner needs; built from a job spec by `trainkube.planner.from_spec`."""

    shape: Shape
    sequence_length: int
    global_batch_size: int
    nodes: int
    gpus_per_node: int
    gpu_memory: int
    cpu_memory_per_node: int
    precision: Precision = Precision.BF16
    lora_parameters: int | None = None
    nvme_per_node: int = 0
    overrides: Overrides = field(default_factory=Overrides)
    optimizer: Optimizer = field(default_factory=Optimizer)

    @property
    def on_cpu(self) -> bool:
        return self.gpus_per_node == 0

    @property
    def ranks(self) -> int:
        return self.nodes * max(self.gpus_per_node, 1)

    @property
    def device_memory(self) -> int:
        """Memory of one rank's device: a GPU, or on the CPU the node's share per process."""
        return self.cpu_memory_per_node if self.on_cpu else self.gpu_memory

    @property
    def effective_precision(self) -> Precision:
        return Precision.FP32 if self.on_cpu else self.precision


@dataclass(frozen=True)
class Plan:
    """A plan that fits, with its memory and the DeepSpeed config that carries it out."""

    rung: Rung
    activation_checkpointing: bool
    micro_batch_size: int
    gradient_accumulation_steps: int
    data_parallel_size: int
    parameters: int
    trainable_parameters: int
    states: ModelStates
    activation_bytes: int
    overhead_bytes: int
    device_memory: int
    reason: str
    deepspeed_config: dict[str, Any]

    @property
    def gpu_total(self) -> int:
        return self.states.gpu_total + self.activation_bytes + self.overhead_bytes


@dataclass(frozen=True)
class _Fit:
    rung: Rung
    checkpointing: bool
    micro: int
    states: ModelStates
    activations: int
    overhead: int

    @property
    def device_total(self) -> int:
        return self.states.gpu_total + self.activations + self.overhead


def _rungs(request: PlanRequest) -> list[Rung]:
    wanted = request.overrides
    forced = (wanted.zero_stage, wanted.offload_optimizer, wanted.offload_parameters) != (
        None,
        None,
        None,
    )
    candidates = CONFIGURATIONS if forced else ladder(ranks=request.ranks, on_cpu=request.on_cpu)
    rungs = [r for r in candidates if not request.on_cpu or r.offload_optimizer is Device.NONE]
    if wanted.zero_stage is not None:
        rungs = [r for r in rungs if r.stage == wanted.zero_stage]
    if wanted.offload_optimizer is not None:
        rungs = [r for r in rungs if r.offload_optimizer is wanted.offload_optimizer]
    if wanted.offload_parameters is not None:
        rungs = [r for r in rungs if r.offload_parameters is wanted.offload_parameters]
    if request.nvme_per_node == 0:
        rungs = [r for r in rungs if Device.NVME not in (r.offload_optimizer, r.offload_parameters)]
    return rungs


def _micro_batches(request: PlanRequest) -> list[int]:
    per_rank = request.global_batch_size // request.ranks
    if request.overrides.micro_batch_size is not None:
        return [request.overrides.micro_batch_size]
    return [m for m in range(per_rank, 0, -1) if per_rank % m == 0]


def _evaluate(request: PlanRequest, rung: Rung, checkpointing: bool, micro: int) -> _Fit:
    shape = request.shape
    mixed = request.effective_precision is not Precision.FP32
    states = model_states(
        rung=rung,
        parameters=shape.parameters(),
        trainable=request.lora_parameters or shape.parameters(),
        largest_layer=shape.largest_layer_parameters(),
        nodes=request.nodes,
        gpus_per_node=request.gpus_per_node,
        mixed_precision=mixed,
    )
    acts = activations(
        shape=shape,
        sequence=request.sequence_length,
        micro_batch=micro,
        checkpointing=checkpointing,
        fp32=not mixed,
    )
    bucket_bytes = 2 * min(BUCKET_ELEMENTS, shape.parameters()) * (2 if mixed else 4)
    context = 0 if request.on_cpu else CONTEXT_BYTES
    overhead = context + bucket_bytes + int(FRAGMENTATION * (states.gpu_total + acts))
    return _Fit(rung, checkpointing, micro, states, acts, overhead)


def _fits(request: PlanRequest, fit: _Fit) -> bool:
    if request.on_cpu:
        # Model states, activations and the loading buffers share the node's memory.
        total = fit.device_total + fit.states.cpu_per_node
        return total <= request.cpu_memory_per_node
    return (
        fit.device_total <= request.gpu_memory
        and fit.states.cpu_per_node <= request.cpu_memory_per_node
        and fit.states.nvme_per_node <= request.nvme_per_node
    )


def _check_batch(request: PlanRequest) -> None:
    if request.global_batch_size % request.ranks:
        ranks = request.ranks
        lower = request.global_batch_size // ranks * ranks
        raise PlanError(
            f"globalBatchSize {request.global_batch_size} cannot be split evenly over {ranks} "
            f"data-parallel ranks ({request.nodes} nodes x {max(request.gpus_per_node, 1)}): "
            f"use a multiple of {ranks}, e.g. {lower or ranks} or {lower + ranks}"
        )
    micro = request.overrides.micro_batch_size
    per_rank = request.global_batch_size // request.ranks
    if micro is not None and per_rank % micro:
        raise PlanError(
            f"microBatchSize {micro} does not divide the {per_rank} sequences each rank gets "
            f"per step (globalBatchSize {request.global_batch_size} / {request.ranks} ranks): "
            f"use a divisor of {per_rank} or auto"
        )


def plan(request: PlanRequest) -> Plan:
    """The plan for `request`, or PlanError saying why none fits and what would."""
    _check_batch(request)
    rungs = _rungs(request)
    if not rungs:
        raise PlanError(_no_rung_message(request))
    choices = (
        [request.overrides.activation_checkpointing]
        if request.overrides.activation_checkpointing is not None
        else [False, True]
    )
    smallest: _Fit | None = None
    for rung in rungs:
        for checkpointing in choices:
            for micro in _micro_batches(request):
                fit = _evaluate(request, rung, checkpointing, micro)
                if _fits(request, fit):
                    return _finish(request, fit)
                if smallest is None or fit.device_total < smallest.device_total:
                    smallest = fit
    assert smallest is not None
    raise PlanError(_does_not_fit_message(request, smallest))


def _no_rung_message(request: PlanRequest) -> str:
    wanted = request.overrides
    if request.on_cpu and wanted.offload_optimizer not in (None, Device.NONE):
        return "offload needs GPUs: a CPU job (gpusPerNode 0) keeps everything in host memory"
    if request.nvme_per_node == 0 and Device.NVME in (
        wanted.offload_optimizer,
        wanted.offload_parameters,
    ):
        return "offload to nvme needs resources.nvme (the NVMe each node has)"
    return (
        f"no ZeRO configuration has zeroStage {wanted.zero_stage}, offloadOptimizer "
        f"{wanted.offload_optimizer}, offloadParameters {wanted.offload_parameters}: "
        "optimizer offload needs stage 2 or 3 (cpu) or 3 (nvme); parameter offload needs "
        "stage 3 and optimizer offload to the same or a slower device"
    )


def _does_not_fit_message(request: PlanRequest, best: _Fit) -> str:
    unit = "GPU" if not request.on_cpu else "node"
    hb = human_bytes
    lines = [
        f"the model does not fit: {human_count(request.shape.parameters())} parameters on "
        f"{request.ranks} {'GPUs' if not request.on_cpu else 'CPU ranks'}; the smallest plan "
        f"tried ({best.rung.describe()}, micro-batch {best.micro}, activation checkpointing "
        f"{'on' if best.checkpointing else 'off'}) needs {hb(best.device_total)} per {unit} "
        f"(model states {hb(best.states.gpu_total)}, activations {hb(best.activations)}, "
        f"margin {hb(best.overhead)}) and {hb(best.states.cpu_per_node)} of CPU memory per "
        f"node; declared: {hb(request.device_memory)} per {unit}, "
        f"{hb(request.cpu_memory_per_node)} of CPU memory per node",
    ]
    remedies = []
    if request.overrides != Overrides():
        remedies.append("set the parallelism overrides to auto")
    remedies.append("more nodes or GPUs (ZeRO-3 divides model states by their number)")
    if best.states.cpu_per_node > request.cpu_memory_per_node:
        remedies.append("more CPU memory per node (resources.cpuMemoryPerNode)")
    if request.nvme_per_node == 0 and not request.on_cpu:
        remedies.append("local NVMe for offload (resources.nvme)")
    if request.lora_parameters is None:
        remedies.append("a LoRA fine-tune instead of full training")
    remedies.append("a shorter sequenceLength")
    return "; ".join(lines) + ". What would make it fit: " + ", or ".join(remedies) + "."


def _finish(request: PlanRequest, fit: _Fit) -> Plan:
    per_rank = request.global_batch_size // request.ranks
    accumulation = per_rank // fit.micro
    parameters = request.shape.parameters()
    trainable = request.lora_parameters or parameters
    margin = request.device_memory - fit.device_total
    why = (
        "is what spec.parallelism asks for, and fits"
        if request.overrides != Overrides()
        else "is the least-communication configuration that fits"
    )
    reason = (
        f"{fit.rung.describe()} {why}: {human_bytes(fit.device_total)} of "
        f"{human_bytes(request.device_memory)} per {'GPU' if not request.on_cpu else 'node'} "
        f"({human_bytes(margin)} to spare) with micro-batch "
        f"{fit.micro} x {accumulation} accumulation x {request.ranks} ranks = "
        f"{request.global_batch_size}"
        + (", activations recomputed" if fit.checkpointing else "")
        + "."
    )
    return Plan(
        rung=fit.rung,
        activation_checkpointing=fit.checkpointing,
        micro_batch_size=fit.micro,
        gradient_accumulation_steps=accumulation,
        data_parallel_size=request.ranks,
        parameters=parameters,
        trainable_parameters=trainable,
        states=fit.states,
        activation_bytes=fit.activations,
        overhead_bytes=fit.overhead,
        device_memory=request.device_memory,
        reason=reason,
        deepspeed_config=deepspeed_config(request, fit.rung, fit.micro, accumulation),
    )


def deepspeed_config(
    request: PlanRequest, rung: Rung, micro: int, accumulation: int
) -> dict[str, Any]:
    """The complete DeepSpeed config of a plan."""
    opt = request.optimizer
    bucket = min(BUCKET_ELEMENTS, request.shape.parameters())
    zero: dict[str, Any] = {
        "stage": rung.stage,
        "overlap_comm": not request.on_cpu,
        "contiguous_gradients": True,
        "reduce_bucket_size": bucket,
    }
    if rung.stage < 3:
        zero["allgather_bucket_size"] = bucket
    else:
        zero["stage3_prefetch_bucket_size"] = bucket
        zero["stage3_param_persistence_threshold"] = 100_000
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    pin = not request.on_cpu
    if rung.offload_optimizer is Device.CPU:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if rung.offload_optimizer is Device.NVME:
        zero["offload_optimizer"] = {"device": "nvme", "nvme_path": "/local_nvme"}
    if rung.offload_parameters is Device.CPU:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    if rung.offload_parameters is Device.NVME:
        zero["offload_param"] = {"device": "nvme", "nvme_path": "/local_nvme"}
    config: dict[str, Any] = {
        "train_batch_size": request.global_batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": opt.gradient_clipping,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": opt.learning_rate,
                "betas": list(opt.betas),
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
            },
        },
        "scheduler": _scheduler(opt),
        "steps_per_print": 10**9,  # the trainer reports progress itself
        "wall_clock_breakdown": False,
    }
    precision = request.effective_precision
    if precision is Precision.BF16:
        config["bf16"] = {"enabled": True}
    elif precision is Precision.FP16:
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if Device.NVME in (rung.offload_optimizer, rung.offload_parameters):
        config["aio"] = {"block_size": 1_048_576, "queue_depth": 8, "overlap_events": True}
    return config


def _scheduler(opt: Optimizer) -> dict[str, Any]:
    # DeepSpeed's schedulers refuse 0 warm-up steps; 1 step is the same as none.
    warmup = {"warmup_num_steps": max(1, opt.warmup_steps)}
    if opt.schedule is LrSchedule.CONSTANT:
        return {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": opt.learning_rate, **warmup},
        }
    if opt.schedule is LrSchedule.LINEAR:
        return {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": opt.learning_rate,
                "total_num_steps": opt.total_steps,
                **warmup,
            },
        }
    return {
        "type": "WarmupCosineLR",
        "params": {
            "total_num_steps": opt.total_steps,
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": opt.min_lr_ratio,
            **warmup,
        },
    }
