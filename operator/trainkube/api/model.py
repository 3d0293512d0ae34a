"""The model a job trains, fine-tunes or evaluates: a Hugging Face Hub repository, a folder on a
volume, another job's output, or (pre-training only) an architecture built from scratch. The
shape given here is also what the planner sizes memory from.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, rules
from trainkube.api.refs import JobOutputRef, SecretKeyRef, VolumePath


class HubModel(ApiModel):
    """A model on the Hugging Face Hub (or a mirror the image is configured for)."""

    id: str = Field(
        description="id of the model repository, e.g. 'meta-llama/Llama-3.1-8B'.",
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    )
    revision: str = Field(
        default="main",
        description="revision of the repository: a branch, tag or commit hash.",
        min_length=1,
        max_length=256,
    )


class ArchitectureFamily(StrEnum):
    LLAMA = "llama"
    MISTRAL = "mistral"
    QWEN2 = "qwen2"
    GPT_NEOX = "gpt_neox"


class Architecture(ApiModel):
    """A decoder-only transformer to train from scratch, given by its shape. The parameter
    count and activation memory the planner uses follow from it."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="self.hiddenSize % self.heads == 0",
                message="hiddenSize must be divisible by heads (each head gets "
                "hiddenSize / heads dimensions)",
                field_path=".hiddenSize",
            ),
            Rule(
                rule="!has(self.kvHeads) || self.heads % self.kvHeads == 0",
                message="heads must be divisible by kvHeads (grouped-query attention shares each "
                "key/value head among heads / kvHeads query heads)",
                field_path=".kvHeads",
            ),
        )
    }

    family: ArchitectureFamily = Field(
        default=ArchitectureFamily.LLAMA,
        description="family of the architecture (the transformers model class): llama, "
        "mistral, qwen2 or gpt_neox.",
    )
    layers: int = Field(description="number of transformer blocks.", ge=1, le=1024)
    hidden_size: int = Field(description="width of the residual stream.", ge=8, le=65536)
    heads: int = Field(description="number of attention (query) heads.", ge=1, le=1024)
    kv_heads: int | None = Field(
        default=None,
        description="number of key/value heads for grouped-query attention; defaults to heads.",
        ge=1,
        le=1024,
    )
    intermediate_size: int | None = Field(
        default=None,
        description="width of the MLP; defaults to the family's rule (about 8/3 x hiddenSize "
        "for llama).",
        ge=8,
        le=262144,
    )
    vocab_size: int = Field(description="size of the vocabulary.", ge=2, le=1048576)
    context_length: int = Field(
        description="the longest sequence the model is built for (position embeddings).",
        ge=8,
        le=1048576,
    )


MODEL_SOURCE_FIELDS = ("hub", "volume", "architecture", "fromJob")
LoadDtype = Literal["auto", "bf16", "fp16", "fp32"]


class ModelSource(ApiModel):
    """Where a model comes from: exactly one of hub, volume, architecture (LLMTrainingJob only)
    or fromJob (FineTuneJob and EvalJob)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="!(has(self.architecture) && has(self.shape))",
                message="shape describes a hub or volume model for the planner; a model built "
                "from architecture already has its shape: remove shape",
                field_path=".shape",
            ),
            Rule(
                rule="!(has(self.tokenizer) && has(self.tokenizerVolume))",
                message="tokenizer (a hub id) and tokenizerVolume (a folder on a volume) are two "
                "ways to name one tokenizer: set one of them",
                field_path=".tokenizerVolume",
            ),
        )
    }

    hub: HubModel | None = Field(default=None, description="a model on the Hugging Face Hub.")
    volume: VolumePath | None = Field(
        default=None,
        description="a model saved with save_pretrained in a folder on a volume.",
    )
    architecture: Architecture | None = Field(
        default=None,
        description="a new model built from this shape, with freshly initialised weights.",
    )
    from_job: JobOutputRef | None = Field(
        default=None,
        description="the model or adapter another trainkube job wrote.",
    )
    shape: Architecture | None = Field(
        default=None,
        description="the shape of a hub or volume model (its config.json: layers, hiddenSize, "
        "heads, vocabSize...), for the planner, which chooses the ZeRO stage and offload before "
        "any pod can read the model. Not needed with architecture, nor with fromJob when the "
        "referenced job knows it.",
    )
    dtype: LoadDtype = Field(
        default="auto",
        description="dtype the weights are loaded in: auto (as saved, or the training "
        "precision), bf16, fp16 or fp32.",
    )
    tokenizer: HubModel | None = Field(
        default=None,
        description="the tokenizer on the Hugging Face Hub, when it is not the model's own. A "
        "model built from an architecture uses a byte-level tokenizer unless this or "
        "tokenizerVolume is set.",
    )
    tokenizer_volume: VolumePath | None = Field(
        default=None,
        description="the tokenizer in a folder on a volume, when it is not the model's own: "
        "saved with transformers' save_pretrained, or a tokenizers tokenizer.json (whose "
        "special tokens include an end-of-sequence token such as <|endoftext|> or </s>).",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="the Secret key holding a Hugging Face token, for gated or private models.",
    )


def sequence_fits(sequence: str, *, context: str, when: str, default: int, otherwise: str) -> Rule:
    """A rule for a spec: the sequence length at `sequence` (a path below the spec, such as
    `data.sequenceLength`) is at most the model's context length at `context` (such as
    `model.architecture.contextLength`), checked when the CEL condition `when` holds. A longer
    sequence needs positions the model was not built for; refused at apply, not by a failed
    worker. `default` is the sequence length when unset, `otherwise` the other way out.

    The message names the fields, not their values: a messageExpression that prints an integer
    (`string(int)`) has no size bound the apiserver can estimate, and it refuses the CRD."""
    return Rule(
        rule=f"!({when}) || self.{sequence} <= self.{context}",
        message=f"{sequence} ({default} when unset) must be at most {context}, the longest "
        f"sequence the model is built for: shorten {sequence}, or {otherwise}",
        field_path=f".{sequence}",
    )
