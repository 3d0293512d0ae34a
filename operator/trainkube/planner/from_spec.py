"""Turn a job's spec into a `PlanRequest`: the only place the planner meets the API models."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from trainkube.api.base import AUTO
from trainkube.api.finetunejob import FineTuneJob, Method
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.model import ModelSource
from trainkube.api.parallelism import Offload, Parallelism, Switch
from trainkube.api.refs import JobOutputRef
from trainkube.api.resources import Resources
from trainkube.api.training import Training
from trainkube.planner.memory import Device
from trainkube.planner.plan import Optimizer, Overrides, PlanError, PlanRequest
from trainkube.planner.shape import DEFAULT_LORA_TARGETS, Shape, shape_of

# Finds the model source a `fromJob` reference points at (a manifest on disk, or the cluster).
Resolver = Callable[[JobOutputRef], ModelSource | None]


def _bytes(quantity: str) -> int:
    return int(Decimal(parse_quantity(quantity)))  # type: ignore[no-untyped-call]


def model_shape(source: ModelSource, resolve: Resolver, *, field: str) -> Shape:
    """The shape of the model `source` names, following fromJob references."""
    seen: list[str] = []
    current: ModelSource | None = source
    while current is not None:
        if current.architecture is not None:
            return shape_of(current.architecture)
        if current.shape is not None:
            return shape_of(current.shape)
        if current.from_job is None:
            break
        ref = current.from_job
        seen.append(f"{ref.kind}/{ref.name}")
        if len(seen) > 8:
            raise PlanError(f"{field}.fromJob: the chain {' -> '.join(seen)} does not end")
        current = resolve(ref)
        if current is None:
            raise PlanError(
                f"{field}.fromJob: {ref.kind} {ref.name!r} was not found, so the model's shape "
                f"is unknown: create that job first, or set {field}.shape"
            )
    raise PlanError(
        f"{field}: the planner needs the model's shape and a hub or volume model does not say "
        f"it: set {field}.shape (layers, hiddenSize, heads, vocabSize, contextLength from the "
        "model's config.json)"
    )


def _overrides(parallelism: Parallelism) -> Overrides:
    def device(value: Offload) -> Device | None:
        return None if value is Offload.AUTO else Device(value.value)

    checkpointing = parallelism.activation_checkpointing
    return Overrides(
        zero_stage=None if parallelism.zero_stage == AUTO else int(parallelism.zero_stage),
        offload_optimizer=device(parallelism.offload_optimizer),
        offload_parameters=device(parallelism.offload_parameters),
        activation_checkpointing=None
        if checkpointing is Switch.AUTO
        else checkpointing is Switch.ENABLED,
        micro_batch_size=None
        if parallelism.micro_batch_size == AUTO
        else int(parallelism.micro_batch_size),
    )


def _optimizer(training: Training) -> Optimizer:
    return Optimizer(
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        betas=(training.adam_beta1, training.adam_beta2),
        eps=training.adam_epsilon,
        gradient_clipping=training.gradient_clipping,
        schedule=training.lr_schedule,
        warmup_steps=training.warmup_for(training.max_steps or 0),
        # With epochs the step count follows from the data; the trainer fills it in.
        total_steps=training.max_steps or 0,
        min_lr_ratio=training.min_lr_ratio,
    )


def _request(
    *,
    shape: Shape,
    resources: Resources,
    training: Training,
    parallelism: Parallelism,
    sequence_length: int,
    lora_parameters: int | None,
) -> PlanRequest:
    return PlanRequest(
        shape=shape,
        sequence_length=sequence_length,
        global_batch_size=training.global_batch_size,
        nodes=resources.nodes,
        gpus_per_node=resources.gpus_per_node,
        gpu_memory=_bytes(resources.gpu_memory),
        cpu_memory_per_node=_bytes(resources.cpu_memory_per_node),
        precision=training.precision,
        lora_parameters=lora_parameters,
        nvme_per_node=_bytes(resources.nvme.size_per_node) if resources.nvme else 0,
        overrides=_overrides(parallelism),
        optimizer=_optimizer(training),
    )


def request_for(job: LLMTrainingJob | FineTuneJob, resolve: Resolver) -> PlanRequest:
    """The plan request of a training or fine-tuning job."""
    if isinstance(job, LLMTrainingJob):
        spec = job.spec
        return _request(
            shape=model_shape(spec.model, resolve, field="spec.model"),
            resources=spec.resources,
            training=spec.training,
            parallelism=spec.parallelism,
            sequence_length=spec.data.sequence_length,
            lora_parameters=None,
        )
    ft = job.spec
    shape = model_shape(ft.base_model, resolve, field="spec.baseModel")
    lora = None
    if ft.method is Method.LORA:
        rank = ft.lora.rank if ft.lora else 16
        targets = tuple(ft.lora.target_modules) if ft.lora and ft.lora.target_modules else ()
        try:
            lora = shape.lora_parameters(rank=rank, targets=targets or default_targets(shape))
        except ValueError as error:
            raise PlanError(f"spec.lora.targetModules: {error}") from error
    return _request(
        shape=shape,
        resources=ft.resources,
        training=ft.training,
        parallelism=ft.parallelism,
        sequence_length=ft.data.sequence_length,
        lora_parameters=lora,
    )


def default_targets(shape: Shape) -> tuple[str, ...]:
    """The modules LoRA adapts when the spec names none: the attention projections."""
    return DEFAULT_LORA_TARGETS if shape.gated else ("query_key_value", "dense")
