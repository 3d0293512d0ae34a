"""The spec fields every kind shares (`RunControl`: suspend, deadline, TTL) and those pre-training
and fine-tuning share (`TrainingRun`: resources, plan overrides, checkpoints, recovery, pods,
tracking). Each kind's spec builds on one of them, so a setting means the same in every kind.
"""

from __future__ import annotations

from pydantic import Field

from trainkube.api.base import ApiModel
from trainkube.api.checkpoints import Checkpoints
from trainkube.api.parallelism import Parallelism
from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.api.resources import Resources
from trainkube.api.template import PodTemplate
from trainkube.api.tracking import Tracking


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
        description="delete the job this long after it succeeded or failed; never when unset. "
        "Only the job object goes: its claims are kept unless createVolume.whenJobDeleted is "
        "Delete, and jobs that build on it still find its output.",
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
