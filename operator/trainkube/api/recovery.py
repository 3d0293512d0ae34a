"""Recovery settings: how many restarts a job gets after pod or node failures, what counts as
divergence (a loss spike), and how a rollback to an earlier checkpoint changes the run. The
operator's recovery decisions and the trainer's spike detector both read these, and both choose
a rollback's checkpoint and skipped batches by the one rule here (`rollback_target`,
`skipped_batches`): the operator when it restarts the pods, the trainer when it rolls back in
place.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from trainkube.api.base import ApiModel


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
    max_disruptions: int = Field(
        default=20,
        description="attempts allowed after disruptions: a worker evicted, preempted, or lost "
        "with its node (the pod's DisruptionTarget condition). They restart the gang at once and "
        "spend none of maxRestarts: the cluster, not the job, was at fault.",
        ge=0,
        le=10_000,
    )
    hang_timeout_seconds: int | None = Field(
        default=None,
        description="restart the workers (reason Hung) when no training step ends for this "
        "long while they all run; 4x as long while starting, validating or checkpointing. "
        "Unset: 10x the run's mean step time, at least 300.",
        ge=10,
        le=7 * 24 * 3600,
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
    in_process: bool = Field(
        default=True,
        description="roll back inside the running workers: they agree on the checkpoint, load "
        "it, lower the learning rate and skip the batches without their pods restarting, so a "
        "rollback does not wait for the gang to be scheduled again. The pods restart as a new "
        "attempt instead (as with false) when that fails: a checkpoint that does not load, a "
        "rank that does not answer, no checkpoint stepsBack early enough, or ZeRO stage 3.",
    )


def latest_rollback_step(*, diverged_at: int, steps_back: int) -> int:
    """The newest step a rollback after divergence at `diverged_at` may go back to."""
    return diverged_at - steps_back


def rollback_target(valid_steps: Iterable[int], *, diverged_at: int, steps_back: int) -> int | None:
    """The checkpoint a rollback goes back to: the newest valid one at least `steps_back` steps
    before the divergence; None when there is none (the run starts again from step 0)."""
    latest = latest_rollback_step(diverged_at=diverged_at, steps_back=steps_back)
    return max((s for s in valid_steps if s <= latest), default=None)


def skipped_batches(data_position: int, count: int) -> tuple[int, int] | None:
    """The data batches [start, end) a rollback to a checkpoint taken at `data_position` skips:
    the `count` batches that followed it (the ones that led to the spike)."""
    return (data_position, data_position + count) if count else None
