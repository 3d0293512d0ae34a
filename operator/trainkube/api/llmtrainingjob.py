"""LLMTrainingJob: pre-training a causal language model, from scratch or continued."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, exactly_one_of, rules
from trainkube.api.data import Data
from trainkube.api.model import MODEL_SOURCE_FIELDS, ModelSource, sequence_fits
from trainkube.api.refs import VolumePath
from trainkube.api.run import TrainingRun
from trainkube.api.status import JobStatus
from trainkube.api.training import Training

MODEL_RULES = rules(
    exactly_one_of(*MODEL_SOURCE_FIELDS, what="model"),
    Rule(
        rule="self == oldSelf",
        message="model is immutable after creation: create a new job to train another model",
    ),
)


class LLMTrainingJobSpec(TrainingRun):
    """What to pre-train, on what data, how, and on what hardware."""

    model_config = TrainingRun.model_config | {
        "json_schema_extra": rules(
            sequence_fits(
                "data.sequenceLength",
                context="model.architecture.contextLength",
                when="has(self.model.architecture) && has(self.data.sequenceLength)",
                default=Data.model_fields["sequence_length"].default,
                otherwise="raise model.architecture.contextLength",
            ),
            sequence_fits(
                "data.sequenceLength",
                context="model.shape.contextLength",
                when="has(self.model.shape) && has(self.data.sequenceLength)",
                default=Data.model_fields["sequence_length"].default,
                otherwise="train a model built for longer sequences (model.shape describes the "
                "model as it is)",
            ),
        )
    }

    model: ModelSource = Field(
        description="the model to train: an architecture to build from scratch, or a model "
        "(hub, volume, or another job's output) to continue training.",
        json_schema_extra=MODEL_RULES,
    )
    data: Data = Field(
        description="the training text.",
        json_schema_extra=rules(
            Rule(
                rule="self == oldSelf",
                message="data is immutable after creation: checkpoints record a position in "
                "this data; create a new job for other data",
            )
        ),
    )
    training: Training = Field(description="steps, batch size, learning rate and schedule.")
    output: VolumePath | None = Field(
        default=None,
        description="where the final model is saved (save_pretrained); the checkpoint volume's "
        "'final' folder when unset.",
    )


class LLMTrainingJob(ApiModel):
    """LLMTrainingJob pre-trains a causal language model on multi-node DeepSpeed, picking the
    ZeRO stage and offload from the GPU memory it declares, with checkpoints, restarts and
    rollbacks from loss spikes."""

    model_config = ApiModel.model_config | {"frozen": False}

    api_version: Literal["trainkube.io/v1alpha1"] = "trainkube.io/v1alpha1"
    kind: Literal["LLMTrainingJob"] = "LLMTrainingJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LLMTrainingJobSpec = Field(description="what the user asks for.")
    status: JobStatus = Field(
        default_factory=JobStatus, description="what the operator observed; written by it only."
    )
