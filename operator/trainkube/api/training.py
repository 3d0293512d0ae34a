"""The optimisation a training or fine-tuning job runs: length, global batch, learning rate and
schedule, AdamW settings and precision. The planner splits the global batch; the trainer follows
the rest.

Users come from `transformers.TrainingArguments`: where a field means the same as one of its
arguments, the description says so ("Same as TrainingArguments.x"), and the README maps every
name. The defaults are trainkube's (LLM pre-training practice), not always TrainingArguments'.
"""

from __future__ import annotations

import math
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
            Rule(
                rule="!(has(self.warmupSteps) && self.warmupSteps > 0 && has(self.warmupRatio))",
                message="set warmupSteps or warmupRatio, not both (warmupRatio is the fraction "
                "of the run's steps; warmupSteps a number of steps)",
                field_path=".warmupRatio",
            ),
        )
    }

    max_steps: int | None = Field(
        default=None,
        description="optimizer steps to train for. Set this or epochs. Same as "
        "TrainingArguments.max_steps.",
        ge=1,
        le=100_000_000,
    )
    epochs: float | None = Field(
        default=None,
        description="passes over the training data (fractions allowed). Set this or maxSteps. "
        "Same as TrainingArguments.num_train_epochs.",
        gt=0,
        le=10_000,
    )
    global_batch_size: int = Field(
        description="sequences per optimizer step across all GPUs. The planner splits it into "
        "micro-batch x gradient accumulation x data-parallel size; it never changes, even when "
        "a restart changes the plan. TrainingArguments sets it as per_device_train_batch_size x "
        "gradient_accumulation_steps x GPUs; here the planner chooses the first two (override "
        "them in parallelism.microBatchSize).",
        ge=1,
        le=1_048_576,
    )
    learning_rate: float = Field(
        description="peak learning rate. Same as TrainingArguments.learning_rate.", gt=0, le=10
    )
    lr_schedule: LrSchedule = Field(
        default=LrSchedule.COSINE,
        description="learning-rate schedule after warm-up: cosine, linear or constant. Same as "
        "TrainingArguments.lr_scheduler_type (constant here is HF's constant_with_warmup: "
        "warm-up applies to every schedule).",
    )
    warmup_steps: int = Field(
        default=0,
        description="steps of linear warm-up from 0 to learningRate. Same as "
        "TrainingArguments.warmup_steps. Set this or warmupRatio.",
        ge=0,
    )
    warmup_ratio: float | None = Field(
        default=None,
        description="warm-up as a fraction of the run's optimizer steps (rounded up), e.g. 0.03; "
        "with epochs the trainer counts the steps from the data. Same as "
        "TrainingArguments.warmup_ratio. Set this or warmupSteps.",
        ge=0,
        lt=1,
    )
    min_lr_ratio: float = Field(
        default=0.1,
        description="the schedule decays to learningRate x minLrRatio (cosine; linear decays "
        "to 0). TrainingArguments has it only as lr_scheduler_kwargs min_lr_rate of "
        "cosine_with_min_lr.",
        ge=0,
        le=1,
    )
    weight_decay: float = Field(
        default=0.0,
        description="AdamW weight decay. Same as TrainingArguments.weight_decay.",
        ge=0,
        le=10,
    )
    adam_beta1: float = Field(
        default=0.9, description="AdamW beta1. Same as TrainingArguments.adam_beta1.", ge=0, lt=1
    )
    adam_beta2: float = Field(
        default=0.95,
        description="AdamW beta2. Same as TrainingArguments.adam_beta2 (whose default, 0.999, "
        "suits fine-tuning more than pre-training).",
        ge=0,
        lt=1,
    )
    adam_epsilon: float = Field(
        default=1e-8,
        description="AdamW epsilon. Same as TrainingArguments.adam_epsilon.",
        gt=0,
        le=1,
    )
    gradient_clipping: float = Field(
        default=1.0,
        description="clip the global gradient norm to this value (0 disables). Same as "
        "TrainingArguments.max_grad_norm.",
        ge=0,
        le=1_000_000,
    )
    precision: Precision = Field(
        default=Precision.BF16,
        description="training precision: bf16 (mixed), fp16 (mixed, loss scaling) or fp32. "
        "The CPU-fallback image trains in fp32 whatever is set here. TrainingArguments says "
        "bf16=True or fp16=True.",
    )
    seed: int = Field(
        default=1234,
        description="random seed for initialisation and data order. Same as "
        "TrainingArguments.seed.",
    )
    eval_interval: int = Field(
        default=0,
        description="evaluate on the validation split every this many steps (0: only at the "
        "end). Same as TrainingArguments.eval_steps with eval_strategy steps (0: eval_strategy "
        "no, except the evaluation at the end).",
        ge=0,
    )
    log_interval: int = Field(
        default=10,
        description="report loss and throughput every this many steps (the last step always). "
        "Same as TrainingArguments.logging_steps.",
        ge=1,
    )

    def warmup_for(self, total_steps: int) -> int:
        """Warm-up steps of a run of `total_steps`: warmupSteps, or warmupRatio of the steps
        rounded up (with epochs only the trainer knows the steps)."""
        if self.warmup_ratio is None:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * total_steps)
