"""Spec pieces shared by LLMTrainingJob, FineTuneJob and EvalJob.

Each class is one concern a user sets in a manifest: where the model and data come from, how to
train, what hardware the job gets and declares, how to keep checkpoints and recover from
failures and loss spikes, and how the worker pods look. Descriptions are written for
`kubectl explain`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from trainkube.api.base import (
    AUTO,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    IntOrAuto,
    Quantity,
    Rule,
    exactly_one_of,
    int_or_auto,
    rules,
)

# A relative path whose segments are never "..": each segment starts with a character other
# than "." or "/", or is "." followed by one, or ".." followed by more, or is ".".
_SEGMENT = r"([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+|\.)"
RELATIVE_PATH = rf"^({_SEGMENT}(/{_SEGMENT})*/?)?$"

# ---------------------------------------------------------------------------------------------
# References to other objects


class SecretKeyRef(ApiModel):
    """A key in a Secret in the job's namespace. The value is mounted into the pods, never
    copied into status, logs or ConfigMaps."""

    name: str = Field(
        description="name of the Secret in the job's namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str = Field(
        description="key inside the Secret whose value is used.",
        min_length=1,
        max_length=253,
    )


class VolumePath(ApiModel):
    """A path inside a PersistentVolumeClaim of the job's namespace."""

    claim_name: str = Field(
        description="claimName is the PersistentVolumeClaim, in the job's namespace, that holds "
        "the files.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    path: str = Field(
        default="",
        description="path inside the volume (relative, no '..'); empty means the volume's root.",
        max_length=1024,
        pattern=RELATIVE_PATH,
    )


class JobKind(StrEnum):
    LLM_TRAINING_JOB = "LLMTrainingJob"
    FINE_TUNE_JOB = "FineTuneJob"


class JobOutputRef(ApiModel):
    """The model another trainkube job wrote (its `status.output`), in the same namespace.
    The job using it waits until that job has succeeded."""

    kind: JobKind = Field(description="kind of the job whose output is used.")
    name: str = Field(
        description="name of that job in the same namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )


# ---------------------------------------------------------------------------------------------
# The model


class Precision(StrEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


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
        description="the tokenizer, when it is not the model's own. A model built from an "
        "architecture uses a byte-level tokenizer unless this is set.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="the Secret key holding a Hugging Face token, for gated or private models.",
    )


# ---------------------------------------------------------------------------------------------
# The data


class FileFormat(StrEnum):
    JSONL = "jsonl"
    TEXT = "text"
    PARQUET = "parquet"


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

    format: FileFormat = Field(description="format of the files: jsonl, text or parquet.")


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
    files: DataFiles | None = Field(default=None, description="jsonl, text or parquet files.")
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


# ---------------------------------------------------------------------------------------------
# Training


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


# ---------------------------------------------------------------------------------------------
# Resources and the parallelism plan


class Nvme(ApiModel):
    """Local NVMe for ZeRO-Infinity offload."""

    path: str = Field(
        default="/local_nvme",
        description="where the NVMe is mounted in the worker pods.",
        pattern=r"^/.*$",
        max_length=1024,
    )
    size_per_node: Quantity = Field(description="usable NVMe capacity per node, e.g. '3Ti'.")


class Resources(ApiModel):
    """The hardware the job runs on. gpuMemory is the memory per GPU the job *declares*: the
    planner picks the ZeRO stage and offload so the job fits in it with a safety margin."""

    nodes: int = Field(default=1, description="number of worker pods (nodes).", ge=1, le=4096)
    gpus_per_node: int = Field(
        default=1,
        description="GPUs per worker pod; 0 runs on the CPU (the CPU-fallback image).",
        ge=0,
        le=64,
    )
    gpu_memory: Quantity = Field(
        default="80Gi", description="memory of each GPU, e.g. '80Gi' for an H100 80 GB."
    )
    cpu_memory_per_node: Quantity = Field(
        default="64Gi",
        description="host memory each worker pod may use (its memory request and limit); CPU "
        "offload must fit in it.",
    )
    cpus_per_node: Quantity = Field(default="8", description="CPU cores for each worker pod.")
    nvme: Nvme | None = Field(
        default=None, description="local NVMe per node, which allows offload to NVMe."
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        description="extended resource name of the GPUs in the cluster.",
        max_length=253,
    )


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
        description="recompute activations in the backward pass to save memory: auto, "
        "enabled or disabled.",
    )
    micro_batch_size: IntOrAuto = Field(
        default=AUTO,
        description='sequences per GPU per forward pass, or "auto". Must divide the global '
        "batch size per data-parallel rank.",
        json_schema_extra=int_or_auto(minimum=1, what="microBatchSize"),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints, failures, rollbacks


class NewVolume(ApiModel):
    """A PersistentVolumeClaim the operator creates for the job (and deletes with it)."""

    size: Quantity = Field(description="requested size, e.g. '500Gi'.")
    storage_class_name: str | None = Field(
        default=None, description="storage class; the cluster default when unset.", max_length=253
    )
    access_mode: str = Field(
        default="ReadWriteMany",
        description="access mode; every worker writes its shard, so multi-node jobs need "
        "ReadWriteMany.",
        pattern=r"^(ReadWriteOnce|ReadWriteMany|ReadWriteOncePod)$",
    )


class Checkpoints(ApiModel):
    """When to checkpoint, where, and which checkpoints to keep."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="!(has(self.volume) && has(self.createVolume))",
                message="checkpoints: set volume (an existing claim) or createVolume (a new "
                "one), not both",
                field_path=".createVolume",
            ),
        )
    }

    interval: int = Field(default=500, description="save a checkpoint every this many steps.", ge=1)
    keep_last: int = Field(default=3, description="keep the newest K checkpoints.", ge=1, le=1000)
    keep_every: int = Field(
        default=0,
        description="also keep every checkpoint whose step is a multiple of this (0: none).",
        ge=0,
    )
    volume: VolumePath | None = Field(
        default=None, description="an existing claim (and folder) for the checkpoints."
    )
    create_volume: NewVolume | None = Field(
        default=None, description="a claim the operator creates for this job's checkpoints."
    )


class FailurePolicy(ApiModel):
    """Restarts after pod or node failures: the whole gang restarts from the newest valid
    checkpoint, as a new attempt."""

    max_restarts: int = Field(
        default=3, description="attempts allowed after the first, for failures.", ge=0, le=1000
    )
    backoff_seconds: int = Field(
        default=10,
        description="wait before the first restart; doubles with each restart, up to 10 minutes.",
        ge=0,
        le=3600,
    )
    escalate_on_oom: bool = Field(
        default=True,
        description="after an out-of-memory failure, restart with the next plan that uses less "
        "memory (higher ZeRO stage, offload, or smaller micro-batch with more accumulation).",
    )


class SpikeRule(ApiModel):
    """A loss spike: the loss above mean + threshold x standard deviation of the last `window`
    steps (or above ratio x the mean, when ratio is set), for `patience` consecutive steps.
    NaN or Inf always counts."""

    window: int = Field(default=100, description="steps in the moving window.", ge=5, le=100_000)
    threshold: float = Field(
        default=6.0, description="how many standard deviations above the mean.", gt=0, le=1000
    )
    ratio: float | None = Field(
        default=None,
        description="also count a step whose loss is above ratio x the window's mean (e.g. 1.5).",
        gt=1,
        le=1000,
    )
    patience: int = Field(
        default=3, description="consecutive spiking steps before it counts.", ge=1, le=10_000
    )


class Rollback(ApiModel):
    """What to do when training diverges: restart from an earlier checkpoint with a lower
    learning rate, optionally skipping the data around the spike (as PaLM did)."""

    enabled: bool = Field(default=True, description="roll back on divergence.")
    rule: SpikeRule = Field(default_factory=SpikeRule, description="what counts as divergence.")
    steps_back: int = Field(
        default=100,
        description="restart from a checkpoint at least this many steps before the spike.",
        ge=0,
    )
    lr_factor: float = Field(
        default=0.5, description="multiply the learning rate by this at each rollback.", gt=0, le=1
    )
    skip_batches: int = Field(
        default=0,
        description="data batches after the restart checkpoint to skip (PaLM skipped 200-500).",
        ge=0,
    )
    max_rollbacks: int = Field(
        default=3, description="rollbacks allowed before the job fails.", ge=0, le=1000
    )


# ---------------------------------------------------------------------------------------------
# Pods and tracking


class Toleration(ApiModel):
    """A toleration, as in a pod spec."""

    key: str | None = Field(default=None, description="taint key the toleration applies to.")
    operator: str | None = Field(
        default=None, description="Exists or Equal.", pattern=r"^(Exists|Equal)$"
    )
    value: str | None = Field(default=None, description="taint value to match.")
    effect: str | None = Field(
        default=None,
        description="NoSchedule, PreferNoSchedule or NoExecute; empty matches all.",
        pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$",
    )
    toleration_seconds: int | None = Field(
        default=None, description="for NoExecute: how long the pod stays bound."
    )


class EnvVar(ApiModel):
    """An environment variable for the trainer container, as in a pod spec."""

    name: str = Field(description="variable name.", min_length=1, max_length=256)
    value: str | None = Field(default=None, description="the value.")
    value_from: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        default=None,
        description="a source for the value (secretKeyRef, configMapKeyRef, fieldRef...), as "
        "in a pod spec.",
    )


class ExtraVolume(ApiModel):
    """A volume to add to the worker pods, and where the trainer container mounts it."""

    name: str = Field(description="volume name.", pattern=DNS_LABEL, max_length=63)
    mount_path: str = Field(description="mount path in the trainer container.", pattern=r"^/.*$")
    read_only: bool = Field(default=False, description="mount read-only.")
    source: Annotated[
        dict[str, Any],
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        description="the volume source as in a pod spec, e.g. {persistentVolumeClaim: "
        "{claimName: datasets}} or {emptyDir: {}}.",
    )


class PodTemplate(ApiModel):
    """How the worker pods look: image, placement and additions. The operator owns the rest."""

    image: str | None = Field(
        default=None,
        description="trainer image; the operator's default (CUDA, or CPU-fallback when "
        "gpusPerNode is 0) when unset.",
        max_length=1024,
    )
    image_pull_policy: str | None = Field(
        default=None,
        description="Always, IfNotPresent or Never.",
        pattern=r"^(Always|IfNotPresent|Never)$",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels added to the worker pods and their Job (e.g. "
        "kueue.x-k8s.io/queue-name).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="annotations added to the worker pods."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels the worker pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="tolerations of the worker pods.", max_length=64
    )
    affinity: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(default=None, description="affinity of the worker pods, as in a pod spec.")
    priority_class_name: str | None = Field(
        default=None, description="priority class of the worker pods.", max_length=253
    )
    service_account_name: str | None = Field(
        default=None,
        description="service account the worker pods run as; the operator's per-job account "
        "when unset.",
        max_length=253,
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="extra environment variables.", max_length=256
    )
    volumes: list[ExtraVolume] = Field(
        default_factory=list, description="extra volumes and their mounts.", max_length=64
    )


class WandbMode(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


class Tracking(ApiModel):
    """Weights & Biases tracking, from rank 0 only."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="self.mode != 'online' || has(self.apiKeySecretRef)",
                message="tracking.mode online needs apiKeySecretRef (a Secret holding the W&B API "
                "key); use mode offline to log without one",
                field_path=".apiKeySecretRef",
            ),
        )
    }

    project: str = Field(description="W&B project.", min_length=1, max_length=128)
    entity: str | None = Field(default=None, description="W&B entity (team or user).")
    mode: WandbMode = Field(
        default=WandbMode.ONLINE, description="online, offline (files only) or disabled."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="the Secret key holding the W&B API key."
    )
    tags: list[str] = Field(default_factory=list, description="tags for the run.", max_length=64)


class RunControl(ApiModel):
    """Lifecycle settings common to all kinds (mixed into each spec)."""

    suspend: bool = Field(
        default=False,
        description="stop the workers and keep the job; setting it back to false resumes from "
        "the newest checkpoint.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        description="fail the job when it has run longer than this, counted from its first "
        "start and excluding time suspended.",
        ge=1,
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        description="delete the job this long after it succeeded or failed; never when unset.",
        ge=0,
    )


class TrainingRun(RunControl):
    """What pre-training and fine-tuning specs share: the hardware, overrides for the plan,
    checkpoints, recovery from failures and divergence, the pods and tracking."""

    resources: Resources = Field(
        default_factory=Resources, description="nodes, GPUs and the memory they declare."
    )
    parallelism: Parallelism = Field(
        default_factory=Parallelism,
        description="overrides for the ZeRO stage, offload, activation checkpointing and "
        "micro-batch the planner would choose.",
    )
    checkpoints: Checkpoints = Field(
        default_factory=Checkpoints, description="checkpoint interval, volume and retention."
    )
    failure_policy: FailurePolicy = Field(
        default_factory=FailurePolicy, description="restarts after pod and node failures."
    )
    rollback: Rollback = Field(
        default_factory=Rollback, description="rollbacks after divergence (loss spikes, NaN)."
    )
    template: PodTemplate = Field(
        default_factory=PodTemplate, description="image, placement and additions for the pods."
    )
    tracking: Tracking | None = Field(default=None, description="Weights & Biases tracking.")
