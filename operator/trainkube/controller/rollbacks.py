"""Rollbacks that happen outside the operator's own recovery: the ones the workers made in place
(from the trainer's report) and the ones a person asks for with the annotation
trainkube.io/rollback-to=<step>. Both go into status.rollbacks and spend maxRollbacks once.
"""

from __future__ import annotations

from trainkube.api.status import ConditionType, Reason, RollbackRecord
from trainkube.controller import report
from trainkube.controller.step import Step


def record_in_process(step: Step) -> None:
    """Rollbacks the workers of the latest attempt made in place: each goes into
    status.rollbacks and spends one of maxRollbacks exactly once. The attempt remembers how many
    of its trainer's (numbered) rollbacks are recorded, so a reconcile that sees the same report
    again, after a failed status write or an operator restart, adds none twice."""
    last = step.last
    if last is None:
        return
    seen = last.in_process_rollbacks or 0
    new = [
        r for r in report.in_process_rollbacks(step.observed.report, last.number) if r.number > seen
    ]
    if not new:
        return
    state = step.recovery
    skips = [*state.skip_batches, *(r.skipped for r in new if r.skipped is not None)]
    step.updates["rollbacks"] = [*step.rollbacks, *(r.record for r in new)]
    step.updates["recovery"] = state.model_copy(
        update={
            "rollbacks": state.rollbacks + len(new),
            "learning_rate_factor": new[-1].learning_rate_factor,
            "skip_batches": skips,
        }
    )
    step.attempts[-1] = last.model_copy(update={"in_process_rollbacks": new[-1].number})
    policy = step.observed.rollback_policy
    budget = policy.max_rollbacks if policy is not None else "?"
    for found in new:
        record = found.record
        message = (
            f"diverged at step {record.detected_at_step} ({record.rule}): the workers of attempt "
            f"{last.number} rolled back in place to checkpoint step-{record.from_checkpoint_step}, "
            f"learning rate {record.learning_rate:g}, skipping {record.skipped_batches} batches "
            f"(rollback {state.rollbacks + found.number - seen} of {budget})"
        )
        step.conds.events.append(("Warning", Reason.ROLLED_BACK_IN_PROCESS.value, message))
    step.conds.mark(ConditionType.ROLLING_BACK, False, Reason.ROLLED_BACK_IN_PROCESS, message)


def requested(step: Step) -> bool:
    """A person asked for a rollback (annotation trainkube.io/rollback-to=<step>): end the
    running attempt, to start the next from the newest checkpoint at or before that step.
    True when the attempt was ended for it (the caller starts the next attempt)."""
    observed, current = step.observed, step.current
    raw = observed.rollback_request
    state = step.recovery
    if raw is None or raw == state.handled_rollback_request:
        return False
    try:
        target_step = int(raw)
    except ValueError:
        step.conds.mark(
            ConditionType.ROLLING_BACK,
            False,
            Reason.INVALID_SPEC,
            f"annotation trainkube.io/rollback-to={raw!r} is not a step number; nothing done",
            warn=True,
        )
        step.updates["recovery"] = state.model_copy(update={"handled_rollback_request": raw})
        return False
    earlier = [c for c in current.checkpoints if c.step <= target_step and c.valid]
    target = max(earlier, key=lambda c: c.step) if earlier else None
    origin = f"checkpoint step-{target.step}" if target else "step 0 (no checkpoint that early)"
    message = f"rollback to step {target_step} requested by annotation: restarting from {origin}"
    record = RollbackRecord(
        detected_at_step=int(current.progress.step if current.progress else 0),
        rule=f"requested: trainkube.io/rollback-to={raw}",
        from_checkpoint_step=target.step if target else 0,
        learning_rate=observed.base_lr * state.learning_rate_factor,
        time=observed.now,
    )
    step.updates["rollbacks"] = [*current.rollbacks, record]
    step.updates["recovery"] = state.model_copy(
        update={
            "resume_step": target.step if target else None,
            "fresh_start": target is None,
            "not_before": None,
            "handled_rollback_request": raw,
            "rollbacks": state.rollbacks + 1,
        }
    )
    step.end_attempt(Reason.ROLLBACK_REQUESTED, message)
    step.conds.mark(ConditionType.ROLLING_BACK, True, Reason.ROLLBACK_REQUESTED, message)
    return True
