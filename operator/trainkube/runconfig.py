"""The run config: the one contract between the operator and the trainer.

The operator writes it (a JSON file in the job's ConfigMap, mounted into every worker); the
trainer reads it and nothing else, so it can be run by hand from such a file. Everything in it
is resolved for the pod: volume claims are mount paths, Secrets are file paths, the plan is a
complete DeepSpeed config. It is versioned; the trainer refuses a version it does not know.
This module imports only pydantic and the API models: both images have it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from trainkube.api.base import ApiModel
from trainkube.api.data import BuiltinCorpus, FileFormat, HubDataset
from trainkube.api.evaljob import ExactMatch, Gate, Harness, Latency, MultipleChoice, Perplexity
from trainkube.api.finetunejob import Lora
from trainkube.api.model import Architecture, HubModel
from trainkube.api.recovery import SpikeRule
from trainkube.api.tracking import WandbMode
from trainkube.api.training import Training

VERSION = 1


class Task(StrEnum):
    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    EVAL = "eval"


class ModelRef(ApiModel):
    """A model as the pod sees it: exactly one of hub, path or architecture."""

    hub: HubModel | None = None
    path: str | None = Field(default=None, description="a save_pretrained folder in the pod.")
    architecture: Architecture | None = None
    tokenizer_hub: HubModel | None = None
    tokenizer_path: str | None = None
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    token_file: str | None = Field(default=None, description="file holding a hub token.")
    adapter_path: str | None = Field(
        default=None, description="a LoRA adapter folder to apply on top of the model."
    )


class Files(ApiModel):
    path: str
    format: FileFormat


class DataRef(ApiModel):
    """Data as the pod sees it: exactly one of hub, files or builtin."""

    hub: HubDataset | None = None
    files: Files | None = None
    builtin: BuiltinCorpus | None = None
    text_field: str = "text"
    prompt_field: str | None = None
    response_field: str | None = None
    sequence_length: int = 2048
    validation_fraction: float = 0.01


class Plan(ApiModel):
    """What the planner decided, and the DeepSpeed config that carries it out."""

    deepspeed: dict[str, Any]
    activation_checkpointing: bool = False
    zero_stage: int = 0


class CheckpointPolicy(ApiModel):
    directory: str
    interval: int = Field(default=500, description="save every this many steps (fixed).")
    # Interval auto: the job's mean time between failures (seconds) for the Young-Daly rule;
    # `interval` is then only the fallback before anything is measured.
    auto_mtbf_seconds: float | None = None
    keep_last: int = 3
    keep_every: int = 0
    resume: bool = Field(default=True, description="resume from the newest valid checkpoint.")
    resume_step: int | None = Field(
        default=None, description="resume from this step's checkpoint (a rollback) instead."
    )
    abandon_after: int | None = Field(
        default=None,
        description="a rollback to this step: the checkpoints after it belong to the abandoned "
        "timeline, and are moved out of the way (never resumed from, never counted by "
        "retention) before training resumes.",
    )


class Recovery(ApiModel):
    """What this attempt changes because of earlier ones (restarts and rollbacks)."""

    lr_factor: float = Field(default=1.0, description="multiply the learning rate by this.")
    skip_batches: list[tuple[int, int]] = Field(
        default_factory=list,
        description="[start, end) ranges of data batch indexes never trained on.",
    )


class InProcessRollback(ApiModel):
    """A rollback the trainer makes itself on divergence (spec.rollback with inProcess), by the
    same rule the operator uses; when it cannot, it exits as diverged and the operator restarts
    the pods from the checkpoint instead."""

    steps_back: int = Field(description="go back to a checkpoint at least this many steps.")
    lr_factor: float = Field(description="multiply the learning rate by this at each one.")
    skip_batches: int = Field(default=0, description="batches after the checkpoint to skip.")
    rollbacks_left: int = Field(description="of the job's maxRollbacks, those not yet used.")
    timeout_seconds: float = Field(
        default=120.0, description="how long the ranks wait for each other to agree."
    )


class Fault(ApiModel):
    """Deliberate faults, for tests and demos: a loss spike (random-token batches from a step
    on), a NaN loss at one step, a crash right after a step (and its checkpoint), or a rank that
    blocks forever before a step."""

    spike_at_step: int | None = None
    crash_after_step: int | None = None
    spike_factor: float = 100.0
    nan_at_step: int | None = None
    # One rank blocks forever before this step (the others then wait in a collective): a hang.
    hang_at_step: int | None = None
    hang_rank: int = -1  # -1: the last rank
    # Only in the attempt that has not yet rolled back (the fault then "passes").
    only_first_attempt: bool = True


class Tracking(ApiModel):
    project: str
    entity: str | None = None
    mode: WandbMode = WandbMode.OFFLINE
    api_key_file: str | None = None
    run_id: str | None = None
    directory: str | None = None


class Reporting(ApiModel):
    """Where rank 0 reports progress: files in a folder, and (in a cluster) the job's report
    ConfigMap, which only this job's pods may write (see the operator's RBAC)."""

    directory: str = Field(description="progress.json and result.json are written here.")
    min_interval_seconds: float = 5.0
    # Rank 0 sends its report at least this often, between steps too: the operator tells a
    # hung run (no step for hangTimeoutSeconds) from a slow one by it.
    heartbeat_seconds: float = 10.0
    # failurePolicy.hangTimeoutSeconds: rank 0 sends a report as soon as this long (by
    # trainkube.hangrule) has passed without a step, so the operator sees the hang at once.
    hang_timeout_seconds: int | None = None
    configmap: str | None = Field(default=None, description="the report ConfigMap's name.")
    namespace: str | None = Field(default=None, description="its namespace.")


class EvalTask(ApiModel):
    name: str
    perplexity: Perplexity | None = None
    multiple_choice: MultipleChoice | None = None
    exact_match: ExactMatch | None = None
    harness: Harness | None = None
    latency: Latency | None = None
    max_examples: int | None = None


class Evaluation(ApiModel):
    evaluations: list[EvalTask]
    gates: list[Gate] = Field(default_factory=list)
    baseline: ModelRef | None = None
    data_root: str | None = Field(
        default=None, description="where files of evaluations are mounted (claim paths resolved)."
    )


class Output(ApiModel):
    directory: str
    merge: bool = False


class RunConfig(ApiModel):
    """Everything one worker needs to run one attempt."""

    version: int = VERSION
    task: Task
    job: str = Field(description="namespace/name of the job, for logs and tracking.")
    attempt: int = 1
    seed: int = 1234
    model: ModelRef
    data: DataRef | None = None
    training: Training | None = None
    method: Literal["full", "lora"] = "full"
    lora: Lora | None = None
    plan: Plan | None = None
    checkpoints: CheckpointPolicy | None = None
    divergence: SpikeRule | None = None
    recovery: Recovery = Field(default_factory=Recovery)
    rollback: InProcessRollback | None = None
    fault: Fault | None = None
    evaluation: Evaluation | None = None
    output: Output | None = None
    tracking: Tracking | None = None
    reporting: Reporting

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        raw = json.loads(path.read_text())
        if raw.get("version", VERSION) != VERSION:
            raise ValueError(
                f"{path}: run config version {raw.get('version')} is not supported by this "
                f"trainer (it reads version {VERSION}); use a trainer image of the same "
                "release as the operator"
            )
        return cls.model_validate(raw)

    def dump(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=True)
