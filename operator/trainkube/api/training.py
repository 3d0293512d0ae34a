"""The optimisation a training or fine-tuning job runs: length, global batch, learning rate and
schedule, AdamW settings and precision. The planner splits the global batch; the trainer follows
the rest.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, exactly_one_of, rules


class Precision(StrEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class LrSchedule(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Training(ApiModel):
    """How long and how to optimise: steps or epochs, batch size, learning rate and schedule."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            exactly_one_of("maxSteps", "epochs", what="training length"),
            Rule(
                rule="!has(self.maxSteps) || !has(self.warmupSteps) || "
                "self.warmupSteps < self.maxSteps",
                message="warmupSteps must be smaller than maxSteps",
                field_path=".warmupSteps",
            ),
        )
    }

    max_steps: int | None = Field(
        default=None,
        description="optimizer steps to train for. Set this or epochs.",
        ge=1,
        le=100_000_000,
    )
    epochs: float | None = Field(
        default=None,
        description="passes over the training data (fractions allowed). Set this or maxSteps.",
        gt=0,
        le=10_000,
    )
    global_batch_size: int = Field(
        description="sequences per optimizer step across all GPUs. The planner splits it into "
        "micro-batch x gradient accumulation x data-parallel size; it never changes, even when "
        "a restart changes the plan.",
        ge=1,
        le=1_048_576,
    )
    learning_rate: float = Field(description="peak learning rate.", gt=0, le=10)
    lr_schedule: LrSchedule = Field(
        default=LrSchedule.COSINE,
        description="learning-rate schedule after warm-up: cosine, linear or constant.",
    )
    warmup_steps: int = Field(
        default=0, description="steps of linear warm-up from 0 to learningRate.", ge=0
    )
    min_lr_ratio: float = Field(
        default=0.1,
        description="the schedule decays to learningRate x minLrRatio.",
        ge=0,
        le=1,
    )
    weight_decay: float = Field(default=0.0, description="AdamW weight decay.", ge=0, le=10)
    adam_beta1: float = Field(default=0.9, description="AdamW beta1.", ge=0, lt=1)
    adam_beta2: float = Field(default=0.95, description="AdamW beta2.", ge=0, lt=1)
    gradient_clipping: float = Field(
        default=1.0, description="clip the gradient norm to this value (0 disables).", ge=0
    )
    precision: Precision = Field(
        default=Precision.BF16,
        description="training precision: bf16 (mixed), fp16 (mixed, loss scaling) or fp32. "
        "The CPU-fallback image trains in fp32 whatever is set here.",
    )
    seed: int = Field(default=1234, description="random seed for initialisation and data order.")
    eval_interval: int = Field(
        default=0,
        description="evaluate on the validation split every this many steps (0: only at the end).",
        ge=0,
    )
    log_interval: int = Field(
        default=10, description="report loss and throughput every this many steps.", ge=1
    )
