"""FineTuneJob: adapting a base model with LoRA (PEFT) or full fine-tuning, SFT on
prompt/response data. One training loop serves both: LoRA is a model transform."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, exactly_one_of, rules
from trainkube.api.data import Data
from trainkube.api.model import MODEL_SOURCE_FIELDS, ModelSource, sequence_fits
from trainkube.api.refs import VolumePath
from trainkube.api.run import TrainingRun
from trainkube.api.status import JobStatus
from trainkube.api.training import Training


class Method(StrEnum):
    LORA = "lora"
    FULL = "full"


class Lora(ApiModel):
    """LoRA settings (method: lora)."""

    rank: int = Field(default=16, description="rank r of the update matrices.", ge=1, le=4096)
    alpha: float = Field(
        default=32, description="scaling: the update is multiplied by alpha / rank.", gt=0
    )
    dropout: float = Field(default=0.05, description="dropout on the LoRA input.", ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=list,
        description="module names to adapt, e.g. [q_proj, k_proj, v_proj, o_proj]; the "
        "attention projections of the model's family when empty.",
        max_length=64,
    )


class FineTuneOutput(ApiModel):
    """What the fine-tune writes."""

    volume: VolumePath | None = Field(
        default=None,
        description="where to write; the checkpoint volume's 'final' folder when unset.",
    )
    merge: bool = Field(
        default=False,
        description="for LoRA: also write the base model with the adapter merged in (the "
        "adapter is always written). Not used by full fine-tuning, which writes the model.",
    )


class FineTuneJobSpec(TrainingRun):
    """What to fine-tune, how, on what data and hardware."""

    model_config = TrainingRun.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="self.method == 'lora' || !has(self.lora)",
                message="lora settings apply to method lora only: remove lora, or set method "
                "to lora",
                field_path=".lora",
            ),
            Rule(
                rule="self.method == 'lora' || !has(self.output) || !self.output.merge",
                message="output.merge merges a LoRA adapter: a full fine-tune writes the whole "
                "model already, so remove output.merge or set method to lora",
                field_path=".output.merge",
            ),
            Rule(
                rule="!has(self.baseModel.architecture)",
                message="baseModel.architecture is for pre-training (LLMTrainingJob): a "
                "fine-tune starts from trained weights (hub, volume or fromJob)",
                field_path=".baseModel.architecture",
            ),
            sequence_fits(
                "data.sequenceLength",
                context="baseModel.shape.contextLength",
                when="has(self.baseModel.shape) && has(self.data.sequenceLength)",
                default=Data.model_fields["sequence_length"].default,
                otherwise="fine-tune a model built for longer sequences (baseModel.shape "
                "describes the model as it is)",
            ),
        )
    }

    base_model: ModelSource = Field(
        description="the model to adapt: hub, volume, or another job's output.",
        json_schema_extra=rules(
            exactly_one_of(*MODEL_SOURCE_FIELDS, what="baseModel"),
            Rule(
                rule="self == oldSelf",
                message="baseModel is immutable after creation: create a new job to fine-tune "
                "another model",
            ),
        ),
    )
    method: Method = Field(
        default=Method.LORA,
        description="lora (train small adapters, base weights frozen) or full (train all weights).",
        json_schema_extra=rules(
            Rule(rule="self == oldSelf", message="method is immutable after creation")
        ),
    )
    lora: Lora | None = Field(default=None, description="LoRA settings; defaults when unset.")
    data: Data = Field(description="the fine-tuning data, usually prompt/response records.")
    training: Training = Field(description="steps or epochs, batch size, learning rate.")
    output: FineTuneOutput | None = Field(default=None, description="what to write and where.")


class FineTuneJob(ApiModel):
    """FineTuneJob adapts a base model with LoRA or full fine-tuning on DeepSpeed, and writes
    the adapter (optionally merged) or the fine-tuned model."""

    model_config = ApiModel.model_config | {"frozen": False}

    api_version: Literal["trainkube.io/v1alpha1"] = "trainkube.io/v1alpha1"
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneJobSpec = Field(description="what the user asks for.")
    status: JobStatus = Field(
        default_factory=JobStatus, description="what the operator observed; written by it only."
    )
