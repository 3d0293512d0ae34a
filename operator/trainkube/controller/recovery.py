"""What happens after an attempt fails: restart, escalate the plan, roll back, or give up.

Pure: the caller passes the failure (reason, message, the trainer's divergence report), the
policy from the spec, the job's status and, for an out-of-memory failure, the escalated plan
the planner offers. Rollbacks and disruptions (a worker evicted, preempted or lost with its
node) do not count against maxRestarts; failures and OOM restarts do. A worker that refused the
job's configuration fails the job at once: a restart would meet the same error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainkube import timestamps
from trainkube.api.recovery import FailurePolicy, Rollback, rollback_target, skipped_batches
from trainkube.api.status import (
    JobStatus,
    PlanEscalation,
    Reason,
    RecoveryState,
    RollbackRecord,
    SkipRange,
)

MAX_BACKOFF_SECONDS = 600


@dataclass(frozen=True)
class Failure:
    attempt: int
    reason: Reason
    message: str
    divergence: dict[str, Any] | None = None  # step, loss, rule (the trainer's result.json)


@dataclass(frozen=True)
class Outcome:
    """Either a next attempt (recovery set) or the end (terminal set)."""

    recovery: RecoveryState | None = None
    terminal: tuple[Reason, str] | None = None
    rollback: RollbackRecord | None = None
    reason: Reason = Reason.RESTARTING
    message: str = ""


def _rollback(
    failure: Failure,
    policy: Rollback,
    status: JobStatus,
    state: RecoveryState,
    *,
    base_lr: float,
    now: str,
) -> Outcome:
    divergence = failure.divergence or {}
    step = int(divergence.get("step", 0))
    if state.rollbacks >= policy.max_rollbacks:
        return Outcome(
            terminal=(
                Reason.ROLLBACKS_EXHAUSTED,
                f"training diverged at step {step} ({divergence.get('rule', 'unknown rule')}) "
                f"after {state.rollbacks} rollbacks; maxRollbacks is {policy.max_rollbacks}",
            )
        )
    chosen = rollback_target(
        (c.step for c in status.checkpoints if c.valid),
        diverged_at=step,
        steps_back=policy.steps_back,
    )
    target = next((c for c in status.checkpoints if c.step == chosen and c.valid), None)
    factor = state.learning_rate_factor * policy.lr_factor
    start = (
        (target.data_position if target and target.data_position is not None else target.step)
        if target
        else 0
    )
    skips = list(state.skip_batches)
    skipped = skipped_batches(start, policy.skip_batches)
    if skipped is not None:
        skips.append(SkipRange(start=skipped[0], end=skipped[1]))
    record = RollbackRecord(
        detected_at_step=step,
        loss=str(divergence.get("loss")),
        rule=str(divergence.get("rule", "")),
        from_checkpoint_step=target.step if target else 0,
        learning_rate=base_lr * factor,
        skipped_batches=policy.skip_batches,
        time=now,
        attempt=failure.attempt,
    )
    origin = f"checkpoint step-{target.step}" if target else "step 0 (no checkpoint early enough)"
    message = (
        f"diverged at step {step} ({record.rule}): rolling back to {origin}, learning rate "
        f"x{factor:g} = {record.learning_rate:g}, skipping {policy.skip_batches} batches "
        f"(rollback {state.rollbacks + 1} of {policy.max_rollbacks})"
    )
    recovery = state.model_copy(
        update={
            "learning_rate_factor": factor,
            "rollbacks": state.rollbacks + 1,
            "skip_batches": skips,
            "resume_step": target.step if target else None,
            "fresh_start": target is None,
            "not_before": now,
        }
    )
    return Outcome(recovery=recovery, rollback=record, reason=Reason.ROLLING_BACK, message=message)


def _after_disruption(
    failure: Failure, policy: FailurePolicy, state: RecoveryState, *, now: str
) -> Outcome:
    if state.disruptions >= policy.max_disruptions:
        return Outcome(
            terminal=(
                Reason.DISRUPTIONS_EXHAUSTED,
                f"{failure.message}; all {policy.max_disruptions} restarts after disruptions "
                "(failurePolicy.maxDisruptions) are used",
            )
        )
    disruptions = state.disruptions + 1
    recovery = state.model_copy(
        update={
            "disruptions": disruptions,
            "resume_step": None,
            "fresh_start": False,
            "not_before": now,
        }
    )
    message = (
        f"{failure.message}; restart after disruption {disruptions} of {policy.max_disruptions} "
        f"from the newest checkpoint, now (not counted against maxRestarts: "
        f"{state.restarts} of {policy.max_restarts} used)"
    )
    return Outcome(recovery=recovery, reason=Reason.RESTARTING, message=message)


def after_failure(
    failure: Failure,
    *,
    failure_policy: FailurePolicy,
    rollback: Rollback,
    status: JobStatus,
    escalation: tuple[PlanEscalation, str] | None,
    base_lr: float,
    now: str,
) -> Outcome:
    """The next step after attempt `failure.attempt` ended with `failure`."""
    state = status.recovery or RecoveryState()
    if failure.reason is Reason.DIVERGED and rollback.enabled and failure.divergence:
        return _rollback(failure, rollback, status, state, base_lr=base_lr, now=now)
    if failure.reason is Reason.CONFIGURATION_ERROR:
        return Outcome(
            terminal=(
                Reason.CONFIGURATION_ERROR,
                f"{failure.message}; the trainer refused the job's configuration, and a restart "
                "would meet the same error: fix the spec and create the job again",
            )
        )
    if failure.reason is Reason.DISRUPTED:
        return _after_disruption(failure, failure_policy, state, now=now)
    if state.restarts >= failure_policy.max_restarts:
        return Outcome(
            terminal=(
                Reason.RESTARTS_EXHAUSTED,
                f"{failure.message}; all {failure_policy.max_restarts} restarts "
                "(failurePolicy.maxRestarts) are used",
            )
        )
    restarts = state.restarts + 1
    update: dict[str, Any] = {"restarts": restarts, "resume_step": None, "fresh_start": False}
    reason, what = Reason.RESTARTING, ""
    if failure.reason is Reason.OUT_OF_MEMORY and failure_policy.escalate_on_oom:
        if escalation is None:
            return Outcome(
                terminal=(
                    Reason.OUT_OF_MEMORY,
                    f"{failure.message}; no plan uses less memory: give the job more GPUs, "
                    "more memory, or NVMe",
                )
            )
        update["escalation"], what = escalation[0], f"; plan escalated: {escalation[1]}"
        reason = Reason.ESCALATED
        delay = 0.0
    else:
        delay = min(failure_policy.backoff_seconds * 2 ** (restarts - 1), MAX_BACKOFF_SECONDS)
    update["not_before"] = timestamps.later(now, delay)
    message = (
        f"{failure.message}{what}; restart {restarts} of {failure_policy.max_restarts} from the "
        f"newest checkpoint in {delay:g} s"
    )
    return Outcome(recovery=state.model_copy(update=update), reason=reason, message=message)
