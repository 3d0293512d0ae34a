"""The data a job reads: where the examples come from (hub, files on a volume, or a built-in
corpus) and, for training, how they become token sequences. Evaluations reuse `DataSource`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, exactly_one_of, rules
from trainkube.api.refs import VolumePath


class FileFormat(StrEnum):
    JSONL = "jsonl"
    TEXT = "text"
    PARQUET = "parquet"
    TOKENS = "tokens"


class HubDataset(ApiModel):
    """A dataset on the Hugging Face Hub."""

    id: str = Field(
        description="id of the dataset repository, e.g. 'HuggingFaceFW/fineweb-edu'.",
        min_length=1,
        max_length=256,
    )
    config: str | None = Field(
        default=None, description="configuration (subset) name, if the dataset has several."
    )
    split: str = Field(default="train", description="split to read.", max_length=128)
    revision: str = Field(default="main", description="revision of the dataset repository.")


class DataFiles(VolumePath):
    """Files on a volume: `path` is a file or a folder of files, all of one format."""

    format: FileFormat = Field(
        description="format of the files: jsonl, text or parquet (records, tokenized when the "
        "job starts), or tokens: a folder `trainkube prepare` wrote (token shards and their "
        "index.json), which every rank reads through a memory map, its own samples only, "
        "whatever the corpus size. Prepared tokens must come from the model's tokenizer, and "
        "promptField and responseField are set exactly when they hold prompt/response data "
        "(the fields themselves were read when the folder was prepared)."
    )


class BuiltinCorpus(StrEnum):
    TINY_STORIES = "tiny-stories"
    TINY_INSTRUCTIONS = "tiny-instructions"
    TINY_EVAL = "tiny-eval"


DATA_SOURCE_FIELDS = ("hub", "files", "builtin")


class DataSource(ApiModel):
    """Where examples come from: exactly one of hub, files or builtin."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(exactly_one_of(*DATA_SOURCE_FIELDS, what="data"))
    }

    hub: HubDataset | None = Field(default=None, description="a dataset on the Hugging Face Hub.")
    files: DataFiles | None = Field(
        default=None, description="jsonl, text or parquet files, or prepared tokens."
    )
    builtin: BuiltinCorpus | None = Field(
        default=None,
        description="a small corpus shipped with the trainer image, for demos and tests: "
        "tiny-stories (plain text), tiny-instructions (prompt/response), tiny-eval "
        "(multiple-choice and exact-match items).",
    )


class Data(DataSource):
    """The training data, how it is read and how much is held out for validation."""

    model_config = DataSource.model_config | {
        "json_schema_extra": rules(
            exactly_one_of(*DATA_SOURCE_FIELDS, what="data"),
            Rule(
                rule="has(self.promptField) == has(self.responseField)",
                message="promptField and responseField go together: set both for "
                "prompt/response data, or neither for plain text",
                field_path=".promptField",
            ),
        )
    }

    text_field: str = Field(
        default="text",
        description="field holding the text of each record (jsonl, parquet, hub data).",
        min_length=1,
        max_length=128,
    )
    prompt_field: str | None = Field(
        default=None,
        description="field holding the prompt of each record, for prompt/response data; the "
        "loss is taken on the response only.",
        min_length=1,
        max_length=128,
    )
    response_field: str | None = Field(
        default=None,
        description="field holding the response of each record, for prompt/response data.",
        min_length=1,
        max_length=128,
    )
    sequence_length: int = Field(
        default=2048,
        description="tokens per training sequence; texts are packed (or, for prompt/response "
        "data, padded) to this length.",
        ge=8,
        le=1048576,
    )
    validation_fraction: float = Field(
        default=0.01,
        description="fraction of the examples held out for validation (0 for none).",
        ge=0,
        lt=1,
    )
