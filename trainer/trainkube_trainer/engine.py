"""The DeepSpeed engine of one attempt: the plan's config adjusted for this attempt and
machine, the model (built partitioned under ZeRO-3), LoRA, and `deepspeed.initialize`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from trainkube.api.training import Precision
from trainkube.runconfig import RunConfig
from trainkube_trainer.distributed import DistEnv, device_choice
from trainkube_trainer.models import apply_lora, load_model, load_tokenizer


@dataclass
class Built:
    engine: Any
    scheduler: Any
    tokenizer: Any
    model: Any  # the module inside the engine (a peft model for LoRA)
    dtype: torch.dtype
    ds_config: dict[str, Any]
    hf_ds_config: Any  # keeps transformers' ZeRO-3 hooks alive


DTYPES = {
    Precision.BF16: torch.bfloat16,
    Precision.FP16: torch.float16,
    Precision.FP32: torch.float32,
}


def precision_section(precision: Precision) -> dict[str, Any]:
    """DeepSpeed's config keys for `precision` (the planner writes the same)."""
    if precision is Precision.BF16:
        return {"bf16": {"enabled": True}}
    if precision is Precision.FP16:
        return {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}}
    return {}


def training_precision(config: RunConfig, env: DistEnv) -> Precision:
    """The job's precision as this machine can train it (`distributed.device_choice`)."""
    requested = config.training.precision if config.training else Precision.FP32
    cuda = not env.on_cpu
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return device_choice(requested=requested, cuda=cuda, bf16_supported=bf16).precision


def deepspeed_config(
    config: RunConfig,
    env: DistEnv,
    *,
    total_steps: int,
    universal: bool,
    precision: Precision | None = None,
) -> dict[str, Any]:
    """The plan's DeepSpeed config for this attempt on this machine, in `precision` (by
    default `training_precision`)."""
    assert config.plan is not None
    ds = copy.deepcopy(config.plan.deepspeed)
    factor = config.recovery.lr_factor
    if "optimizer" in ds:
        ds["optimizer"]["params"]["lr"] *= factor
    scheduler = ds.get("scheduler", {}).get("params", {})
    if "warmup_max_lr" in scheduler:
        scheduler["warmup_max_lr"] *= factor
    if "total_num_steps" in scheduler:
        scheduler["total_num_steps"] = total_steps
    training = config.training
    if "warmup_num_steps" in scheduler and training is not None and training.warmup_ratio:
        # The plan counted warmupRatio of maxSteps; with epochs the steps are known only now.
        # DeepSpeed's schedulers refuse 0 warm-up steps; 1 is the same as none.
        scheduler["warmup_num_steps"] = max(1, training.warmup_for(total_steps))
    # The plan was made for its rank count; a resume on another count keeps the global batch.
    micro = ds["train_micro_batch_size_per_gpu"]
    ds["gradient_accumulation_steps"] = ds["train_batch_size"] // (micro * env.world_size)
    ds.pop("bf16", None)
    ds.pop("fp16", None)
    ds.update(precision_section(precision or training_precision(config, env)))
    if env.on_cpu:
        # The CPU trains in fp32 with a torch AdamW built by the trainer: DeepSpeed's fused and
        # CPU Adam would be compiled at first use (minutes on a small machine).
        ds["zero_force_ds_cpu_optimizer"] = False
        for offload in ("offload_optimizer", "offload_param"):
            if offload in ds.get("zero_optimization", {}):
                ds["zero_optimization"][offload]["pin_memory"] = False
    if universal:
        ds["checkpoint"] = {"load_universal": True}
    return ds


def build(config: RunConfig, env: DistEnv, *, total_steps: int, universal: bool) -> Built:
    import deepspeed  # noqa: PLC0415
    from transformers.integrations.deepspeed import HfDeepSpeedConfig  # noqa: PLC0415

    precision = training_precision(config, env)
    ds = deepspeed_config(
        config, env, total_steps=total_steps, universal=universal, precision=precision
    )
    dtype = DTYPES[precision]
    tokenizer = load_tokenizer(config.model)
    # Under ZeRO-3 the model must be created partitioned; HfDeepSpeedConfig tells transformers.
    hf_ds = HfDeepSpeedConfig(ds) if ds.get("zero_optimization", {}).get("stage") == 3 else None
    model = load_model(config.model, tokenizer=tokenizer, dtype=dtype)
    if config.plan and config.plan.activation_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if config.method == "lora":
        lora = config.lora
        assert lora is not None
        if config.plan and config.plan.activation_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(
            model,
            rank=lora.rank,
            alpha=lora.alpha,
            dropout=lora.dropout,
            targets=lora.target_modules,
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" in ds and env.on_cpu:
        params = ds.pop("optimizer")["params"]
        optimizer = torch.optim.AdamW(
            trainable,
            lr=params["lr"],
            betas=tuple(params["betas"]),
            eps=params["eps"],
            weight_decay=params["weight_decay"],
        )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, model_parameters=trainable, config=ds
    )
    return Built(engine, scheduler, tokenizer, model, dtype, ds, hf_ds)
