"""Status of every kind: conditions in the metav1 shape, the plan, attempts, progress,
checkpoints, rollbacks and outputs. Only the operator writes status; it never writes spec.

Condition types and reasons are named constants here, beside the types, so the operator and the
tests use the same words a user reads in `kubectl describe`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import ApiModel

# Every list in status is bounded, so that an object never nears etcd's size limit.
MAX_ATTEMPTS = 20
MAX_ROLLBACKS = 20
MAX_CHECKPOINTS = 100


class ConditionType(StrEnum):
    PLANNED = "Planned"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    ROLLING_BACK = "RollingBack"
    INVALID = "Invalid"


class Reason(StrEnum):
    """Machine-readable reasons on conditions and Events (CamelCase, as Kubernetes uses)."""

    PLAN_FITS = "PlanFits"
    DOES_NOT_FIT = "DoesNotFit"
    WAITING_FOR_INPUT = "WaitingForInput"
    INVALID_SPEC = "InvalidSpec"
    CHILD_REJECTED = "ChildRejected"
    SECRET_NOT_FOUND = "SecretNotFound"
    VOLUME_NOT_FOUND = "VolumeNotFound"
    WORKERS_STARTING = "WorkersStarting"
    WORKERS_RUNNING = "WorkersRunning"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    CONTAINER_CANNOT_START = "ContainerCannotStart"
    PODS_REJECTED = "PodsRejected"
    COMPLETED = "Completed"
    GATES_FAILED = "GatesFailed"
    WORKER_FAILED = "WorkerFailed"
    CONFIGURATION_ERROR = "ConfigurationError"
    DISRUPTED = "Disrupted"
    HUNG = "Hung"
    DISRUPTIONS_EXHAUSTED = "DisruptionsExhausted"
    ATTEMPT_DELETED = "AttemptDeleted"
    OUT_OF_MEMORY = "OutOfMemory"
    DIVERGED = "Diverged"
    RESTARTS_EXHAUSTED = "RestartsExhausted"
    ROLLBACKS_EXHAUSTED = "RollbacksExhausted"
    RESTARTING = "Restarting"
    ROLLING_BACK = "RollingBack"
    ESCALATED = "PlanEscalated"
    ROLLBACK_REQUESTED = "RollbackRequested"
    ROLLED_BACK_IN_PROCESS = "RolledBackInProcess"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"


class Phase(StrEnum):
    """A one-word summary for printer columns only; conditions are the source of truth."""

    PENDING = "Pending"
    PLANNED = "Planned"
    RUNNING = "Running"
    ROLLING_BACK = "RollingBack"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Condition(ApiModel):
    """A condition in the shape of metav1.Condition."""

    type: str = Field(description="type of the condition, e.g. Running.", max_length=316)
    status: str = Field(description="True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = Field(
        description="one CamelCase word for programs, e.g. OutOfMemory.", max_length=1024
    )
    message: str = Field(default="", description="what happened, for people.", max_length=32768)
    last_transition_time: str = Field(
        description="when the status last changed (RFC 3339).", max_length=64
    )
    observed_generation: int | None = Field(
        default=None, description="the spec generation the condition was set for.", ge=0
    )


class MemoryBreakdown(ApiModel):
    """Estimated memory, in bytes."""

    parameters: int = Field(default=0, description="model parameters.", ge=0)
    gradients: int = Field(default=0, description="gradients.", ge=0)
    optimizer_states: int = Field(default=0, description="optimizer states.", ge=0)
    activations: int = Field(default=0, description="activations of one micro-batch.", ge=0)
    overhead: int = Field(
        default=0, description="buffers, fragmentation and the safety margin.", ge=0
    )
    total: int = Field(default=0, description="the sum.", ge=0)


class PlanStatus(ApiModel):
    """The plan the current attempt runs with."""

    zero_stage: int = Field(description="ZeRO stage 0-3.", ge=0, le=3)
    offload_optimizer: str = Field(description="none, cpu or nvme.")
    offload_parameters: str = Field(description="none, cpu or nvme.")
    activation_checkpointing: bool = Field(description="whether activations are recomputed.")
    micro_batch_size: int = Field(description="sequences per GPU per forward pass.", ge=1)
    gradient_accumulation_steps: int = Field(description="micro-batches per step.", ge=1)
    data_parallel_size: int = Field(description="GPUs (or CPU ranks) in total.", ge=1)
    parameters: int = Field(description="parameter count of the model.", ge=0)
    trainable_parameters: int = Field(description="parameters that are trained.", ge=0)
    gpu_memory_per_gpu: MemoryBreakdown = Field(description="estimated memory on each GPU.")
    cpu_memory_per_node: int = Field(description="estimated host memory per node, bytes.", ge=0)
    reason: str = Field(description="why this plan, in one sentence.", max_length=4096)


class Attempt(ApiModel):
    """One run of the whole gang of workers."""

    number: int = Field(description="1 for the first attempt.", ge=1)
    start_time: str | None = Field(default=None, description="when it started (RFC 3339).")
    end_time: str | None = Field(default=None, description="when it ended (RFC 3339).")
    reason: str | None = Field(
        default=None, description="why it ended (a Reason), or unset while it runs."
    )
    message: str | None = Field(default=None, description="details of how it ended.")
    resumed_from_step: int | None = Field(
        default=None, description="checkpoint step it started from; unset for a fresh start."
    )
    rollback_to: int | None = Field(
        default=None,
        description="a rollback attempt: the step it went back to (0: the start); checkpoints "
        "after it were abandoned.",
        ge=0,
    )
    learning_rate: float | None = Field(default=None, description="peak learning rate it used.")
    zero_stage: int | None = Field(default=None, description="ZeRO stage of its plan.")
    job_uid: str | None = Field(
        default=None,
        description="uid of the batch Job that runs it, once the operator has seen it; a Job "
        "that vanishes after that ends the attempt as failed.",
    )
    workers_started: str | None = Field(
        default=None, description="when its last worker started running (RFC 3339)."
    )
    first_step_time: str | None = Field(
        default=None, description="when the operator first saw a step of it end (RFC 3339)."
    )
    last_step: int | None = Field(
        default=None, description="the last step it reported (what a restart recomputes).", ge=0
    )
    in_process_rollbacks: int | None = Field(
        default=None,
        description="rollbacks its workers made in place (each is in status.rollbacks and "
        "counted in recovery.rollbacks once).",
        ge=0,
    )


class Progress(ApiModel):
    """How far the current attempt has come, as the trainer last reported it."""

    step: int = Field(default=0, description="optimizer steps done.", ge=0)
    total_steps: int | None = Field(default=None, description="steps in the whole run.", ge=0)
    steps: str | None = Field(
        default=None, description="step/total, for printer columns (e.g. '1200/5000')."
    )
    loss: str | None = Field(default=None, description="latest training loss, for display.")
    validation_loss: str | None = Field(default=None, description="latest validation loss.")
    learning_rate: float | None = Field(default=None, description="current learning rate.")
    tokens_per_second: float | None = Field(default=None, description="throughput of the gang.")
    eta: str | None = Field(default=None, description="estimated time to finish (RFC 3339).")
    updated: str | None = Field(default=None, description="when this was reported (RFC 3339).")


class CheckpointRecord(ApiModel):
    """A checkpoint the trainer published."""

    step: int = Field(description="step it was taken at.", ge=0)
    loss: str | None = Field(default=None, description="training loss at that step.")
    time: str | None = Field(default=None, description="when it was published (RFC 3339).")
    size_bytes: int | None = Field(default=None, description="size on the volume.", ge=0)
    path: str | None = Field(default=None, description="folder on the checkpoint volume.")
    data_position: int | None = Field(
        default=None, description="data batches consumed when it was taken (for rollbacks)."
    )
    valid: bool = Field(
        default=True,
        description="false when its checksums did not verify, or a rollback abandoned it.",
    )
    invalid_reason: str | None = Field(default=None, description="why it is not valid.")
    seconds: float | None = Field(default=None, description="how long the save took.", ge=0)


class RollbackRecord(ApiModel):
    """One rollback after divergence."""

    detected_at_step: int = Field(description="step the divergence was detected at.", ge=0)
    loss: str | None = Field(default=None, description="the loss that triggered it.")
    rule: str = Field(description="which rule fired, e.g. 'nan' or 'spike: loss > mean + 6 sigma'.")
    from_checkpoint_step: int = Field(description="checkpoint step training restarted from.")
    learning_rate: float = Field(description="the new peak learning rate.")
    skipped_batches: int = Field(default=0, description="data batches skipped.", ge=0)
    time: str = Field(description="when it happened (RFC 3339).")
    in_process: bool = Field(
        default=False,
        description="true: the running workers rolled back in place (no pod restarted); "
        "false: the pods restarted as a new attempt.",
    )
    attempt: int | None = Field(default=None, description="the attempt it happened in.", ge=1)


class SkipRange(ApiModel):
    """Data batches [start, end) that training never uses (skipped by a rollback)."""

    start: int = Field(description="first skipped batch index.", ge=0)
    end: int = Field(description="batch index after the last skipped one.", ge=0)


class PlanEscalation(ApiModel):
    """Plan settings forced after out-of-memory failures (they win over spec.parallelism)."""

    zero_stage: int | None = Field(default=None, description="ZeRO stage.")
    offload_optimizer: str | None = Field(default=None, description="none, cpu or nvme.")
    offload_parameters: str | None = Field(default=None, description="none, cpu or nvme.")
    micro_batch_size: int | None = Field(default=None, description="sequences per GPU.")
    activation_checkpointing: bool | None = Field(default=None, description="recompute.")


class RecoveryState(ApiModel):
    """What the next attempt inherits from the failures and rollbacks so far."""

    restarts: int = Field(
        default=0,
        description="attempts started after failures (counted against maxRestarts).",
        ge=0,
    )
    rollbacks: int = Field(
        default=0,
        description="rollbacks so far, after divergence or asked for (counted against "
        "maxRollbacks; they spend no restarts).",
        ge=0,
    )
    disruptions: int = Field(
        default=0,
        description="attempts started after a worker was evicted, preempted or lost with its "
        "node (counted against maxDisruptions; they spend no restarts).",
        ge=0,
    )
    learning_rate_factor: float = Field(
        default=1.0, description="product of the lrFactor of every rollback so far.", gt=0
    )
    skip_batches: list[SkipRange] = Field(
        default_factory=list, description="data batches skipped by rollbacks."
    )
    resume_step: int | None = Field(
        default=None, description="checkpoint step the next attempt starts from (a rollback)."
    )
    fresh_start: bool = Field(
        default=False,
        description="the next attempt starts from step 0 (no checkpoint early enough).",
    )
    not_before: str | None = Field(
        default=None, description="the next attempt starts no earlier than this (back-off)."
    )
    escalation: PlanEscalation | None = Field(
        default=None, description="plan settings forced after out-of-memory failures."
    )
    handled_rollback_request: str | None = Field(
        default=None,
        description="the last trainkube.io/rollback-to annotation value acted on.",
    )


class Output(ApiModel):
    """Where the job's result went."""

    model_path: str | None = Field(
        default=None, description="the trained (or merged) model, as claim:path."
    )
    adapter_path: str | None = Field(default=None, description="the LoRA adapter, as claim:path.")
    results_path: str | None = Field(default=None, description="evaluation results JSON.")


class CheckpointInterval(ApiModel):
    """The checkpoint interval the trainer chose (checkpoints.interval auto), and why."""

    steps: int = Field(description="steps between checkpoints.", ge=1)
    seconds: float = Field(description="the Young-Daly interval in seconds.", ge=0)
    save_seconds: float = Field(description="the save time it used.", ge=0)
    mtbf_hours: float = Field(description="the mean time between failures it used.", ge=0)
    reason: str = Field(description="the rule with its numbers.", max_length=1024)


class LostTime(ApiModel):
    """Where the wall time that trained nothing went, in seconds."""

    scheduling: int = Field(default=0, description="attempts waiting for their workers to run.")
    startup: int = Field(
        default=0, description="workers running before their first step (loading, resuming)."
    )
    checkpointing: int = Field(default=0, description="saving checkpoints.")
    recomputation: int = Field(
        default=0, description="steps trained again after a restart (since the last checkpoint)."
    )
    restarts: int = Field(default=0, description="between an attempt's end and the next start.")
    suspended: int = Field(default=0, description="suspended.")


class Goodput(ApiModel):
    """How much of the time since the first start went into training that counts."""

    ratio: str = Field(description="productive / wall time, as a percentage, e.g. '92.4%'.")
    productive_seconds: int = Field(description="time that trained steps kept.", ge=0)
    wall_seconds: int = Field(description="time since the first start.", ge=0)
    lost: LostTime = Field(description="where the rest went.")
    eta: str | None = Field(
        default=None, description="when the run should end at the recent step rate (RFC 3339)."
    )


class JobStatus(ApiModel):
    """What the operator knows about the job."""

    observed_generation: int | None = Field(
        default=None, description="the spec generation this status describes."
    )
    phase: Phase | None = Field(default=None, description="one-word summary for printing.")
    conditions: list[Condition] = Field(
        default_factory=list, description="the job's conditions, one per type.", max_length=32
    )
    plan: PlanStatus | None = Field(default=None, description="the current plan.")
    attempts: list[Attempt] = Field(
        default_factory=list,
        description=f"the last {MAX_ATTEMPTS} attempts, oldest first (numbers count them all).",
        max_length=MAX_ATTEMPTS,
    )
    progress: Progress | None = Field(default=None, description="progress of the run.")
    checkpoints: list[CheckpointRecord] = Field(
        default_factory=list,
        description=f"checkpoints kept on the volume, oldest first (the newest {MAX_CHECKPOINTS}).",
        max_length=MAX_CHECKPOINTS,
    )
    rollbacks: list[RollbackRecord] = Field(
        default_factory=list,
        description=f"the last {MAX_ROLLBACKS} rollbacks, oldest first "
        "(recovery.rollbacks counts them all).",
        max_length=MAX_ROLLBACKS,
    )
    output: Output | None = Field(default=None, description="where the result went.")
    recovery: RecoveryState | None = Field(
        default=None, description="what the next attempt inherits from failures and rollbacks."
    )
    start_time: str | None = Field(default=None, description="first start (RFC 3339).")
    suspended_seconds: int | None = Field(
        default=None,
        description="seconds spent suspended since the first start; activeDeadlineSeconds does "
        "not count them.",
        ge=0,
    )
    completion_time: str | None = Field(default=None, description="end (RFC 3339).")
    checkpoint_interval: CheckpointInterval | None = Field(
        default=None, description="the interval chosen by checkpoints.interval auto, and why."
    )
    goodput: Goodput | None = Field(
        default=None, description="productive time over wall time, and where the rest went."
    )
