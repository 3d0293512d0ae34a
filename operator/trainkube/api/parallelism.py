"""Overrides for the plan: the ZeRO stage, offload, activation checkpointing and micro-batch the
planner would otherwise choose. Kept apart from the resources they are checked against because
every one of them defaults to "auto".
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import AUTO, ApiModel, IntOrAuto, Rule, int_or_auto, rules


class Offload(StrEnum):
    AUTO = "auto"
    NONE = "none"
    CPU = "cpu"
    NVME = "nvme"


class Switch(StrEnum):
    AUTO = "auto"
    ENABLED = "enabled"
    DISABLED = "disabled"


class Parallelism(ApiModel):
    """Overrides for the plan. Everything is "auto" by default: the planner chooses. A value set
    here wins, and is still checked: a plan that cannot fit is refused with the numbers."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="!(has(self.offloadParameters) && self.offloadParameters in ['cpu', 'nvme']) "
                "|| !has(self.zeroStage) || self.zeroStage == 'auto' || self.zeroStage == 3",
                message="offloadParameters needs ZeRO stage 3 (parameters are only partitioned, "
                "and so only offloadable, at stage 3): set zeroStage to 3 or auto",
                field_path=".offloadParameters",
            ),
            Rule(
                rule="!(has(self.offloadOptimizer) && self.offloadOptimizer in ['cpu', 'nvme']) "
                "|| !has(self.zeroStage) || self.zeroStage == 'auto' || self.zeroStage != 0",
                message="offloadOptimizer needs ZeRO stage 1 or higher: set zeroStage to 1, 2, 3 "
                "or auto",
                field_path=".offloadOptimizer",
            ),
        )
    }

    zero_stage: IntOrAuto = Field(
        default=AUTO,
        description='ZeRO stage 0, 1, 2 or 3, or "auto".',
        json_schema_extra=int_or_auto(minimum=0, maximum=3, what="zeroStage"),
    )
    offload_optimizer: Offload = Field(
        default=Offload.AUTO,
        description="where optimizer states live: auto, none (GPU), cpu or nvme.",
    )
    offload_parameters: Offload = Field(
        default=Offload.AUTO,
        description="where parameters live between uses (ZeRO-3 only): auto, none, cpu or nvme.",
    )
    activation_checkpointing: Switch = Field(
        default=Switch.AUTO,
        description="recompute activations in the backward pass to save memory: auto (the "
        "planner turns it on when the job would not fit otherwise), enabled or disabled. "
        "enabled is TrainingArguments.gradient_checkpointing=True.",
    )
    micro_batch_size: IntOrAuto = Field(
        default=AUTO,
        description='sequences per GPU per forward pass, or "auto". Must divide the global '
        "batch size per data-parallel rank. Same as "
        "TrainingArguments.per_device_train_batch_size (gradient accumulation follows).",
        json_schema_extra=int_or_auto(minimum=1, what="microBatchSize"),
    )
