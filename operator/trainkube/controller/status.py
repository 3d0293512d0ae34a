"""The decision of one reconcile, from what is observed: pure, so every transition is testable
without a cluster.

`derive` takes the job's current status, the plan (or why there is none) and what the caches
hold (the latest attempt's batch Job and pods, the other attempts' Jobs, the trainer's report),
and returns the next status, which attempt Jobs to create or delete, when to look again, and
the Events that tell the story in `kubectl describe`.

The attempts in status are the record of intent: an attempt is appended (with what it
inherits from failures and rollbacks) before its Job is created, and ended (with why) before
its Job is deleted or the next one starts. So a reconcile that dies half-way is finished by the
next one, which finds the attempt in status and its Job, or not yet, by label.

The step's bookkeeping (what was observed, the status being built) is controller/step.py;
rollbacks made in place or asked for by annotation are controller/rollbacks.py.
"""

from __future__ import annotations

from trainkube import timestamps
from trainkube.api.recovery import Rollback
from trainkube.api.status import (
    ConditionType,
    JobStatus,
    MemoryBreakdown,
    Phase,
    PlanStatus,
    Reason,
)
from trainkube.controller import hang, recovery, report, rollbacks, workers
from trainkube.controller.conditions import is_finished
from trainkube.controller.step import Decision, Observed, Step
from trainkube.planner.plan import Plan

WAIT_FOR_INPUT_SECONDS = 10.0  # a missing Secret or claim is looked for again this often


def plan_status(plan: Plan) -> PlanStatus:
    states = plan.states
    return PlanStatus(
        zero_stage=plan.rung.stage,
        offload_optimizer=plan.rung.offload_optimizer.value,
        offload_parameters=plan.rung.offload_parameters.value,
        activation_checkpointing=plan.activation_checkpointing,
        micro_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        data_parallel_size=plan.data_parallel_size,
        parameters=plan.parameters,
        trainable_parameters=plan.trainable_parameters,
        gpu_memory_per_gpu=MemoryBreakdown(
            parameters=states.parameters,
            gradients=states.gradients,
            optimizer_states=states.optimizer_states,
            activations=plan.activation_bytes,
            overhead=plan.overhead_bytes,
            total=plan.gpu_total,
        ),
        cpu_memory_per_node=states.cpu_per_node,
        reason=plan.reason,
    )


def finished_at(status: JobStatus) -> float | None:
    """When a finished job finished (epoch seconds), for ttlSecondsAfterFinished."""
    if not is_finished(status) or not status.completion_time:
        return None
    return timestamps.epoch(status.completion_time)


def _fail(step: Step, reason: Reason, message: str) -> Decision:
    step.end_attempt(reason, message)
    step.conds.mark(ConditionType.RUNNING, False, reason, message, warn=True)
    step.conds.mark(ConditionType.FAILED, True, reason, message, warn=True)
    step.updates["completion_time"] = step.now
    return step.decide(Phase.FAILED)


def _seconds_until(moment: str | None, now: str) -> float:
    if not moment or not now:
        return 0.0
    return timestamps.epoch(moment) - timestamps.epoch(now)


def _start_next(step: Step, *, waiting_for: str | None) -> Decision:
    """No attempt runs: start the next one when nothing stands in the way."""
    keep = step.last.number if step.last else None
    waiting = Phase.ROLLING_BACK if step.rolling else Phase.PENDING
    if waiting_for is not None:
        step.conds.mark(ConditionType.PLANNED, False, Reason.WAITING_FOR_INPUT, waiting_for)
        return step.decide(Phase.PENDING, keep=keep)
    if step.observed.missing is not None:
        reason, message = step.observed.missing
        step.conds.mark(ConditionType.RUNNING, False, reason, message, warn=True)
        return step.decide(waiting, keep=keep, requeue=WAIT_FOR_INPUT_SECONDS)
    delay = _seconds_until(step.recovery.not_before, step.now)
    if step.last is not None and delay > 0:
        return step.decide(waiting, keep=keep, requeue=delay)
    number = step.start_attempt()
    if step.current.start_time is None:
        step.updates["start_time"] = step.now
    phase = Phase.ROLLING_BACK if step.rolling else Phase.PLANNED
    return step.decide(phase, keep=number, create=number)


def _after_failure(step: Step, reason: Reason, message: str) -> Decision:
    """The open attempt failed: record it once, then restart, roll back or give up."""
    observed, last = step.observed, step.last
    assert last is not None
    message = f"attempt {last.number} failed: {message}"
    step.end_attempt(reason, message)
    outcome = (
        recovery.after_failure(
            recovery.Failure(last.number, reason, message, observed.divergence),
            failure_policy=observed.failure_policy,
            rollback=observed.rollback_policy or Rollback(enabled=False),
            status=step.current.model_copy(update=step.updates),
            escalation=observed.escalation,
            base_lr=observed.base_lr,
            now=step.now,
        )
        if observed.failure_policy is not None
        else recovery.Outcome(terminal=(reason, message))
    )
    if outcome.terminal is not None:
        why, text = outcome.terminal
        step.conds.mark(ConditionType.RUNNING, False, why, text, warn=True)
        step.conds.mark(ConditionType.FAILED, True, why, text, warn=True)
        step.updates["completion_time"] = step.now
        return step.decide(Phase.FAILED, keep=last.number)
    step.updates["recovery"] = outcome.recovery
    if outcome.rollback is not None:
        step.updates["rollbacks"] = [*step.rollbacks, outcome.rollback]
        step.conds.mark(
            ConditionType.ROLLING_BACK, True, outcome.reason, outcome.message, warn=True
        )
    step.conds.mark(ConditionType.RUNNING, False, outcome.reason, outcome.message, warn=True)
    return _start_next(step, waiting_for=None)


def _all_running(step: Step, text: str) -> Decision:
    """Every worker of the open attempt runs: unless it is hung, the job runs."""
    observed, last = step.observed, step.last
    assert last is not None
    policy = observed.failure_policy
    verdict = hang.check(
        observed.report.get("progress.json") or {},
        observed.pods,
        observed.now,
        policy.hang_timeout_seconds if policy else None,
    )
    if verdict is not None and verdict.hung and policy is not None:
        return _after_failure(step, Reason.HUNG, verdict.message)
    if last.workers_started is None:
        started = workers.started_at(observed.pods) or step.now
        step.attempts[-1] = last = last.model_copy(update={"workers_started": started})
    step.conds.mark(ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, text)
    if step.rolling:
        resumed = f"rollback done: training resumed in attempt {last.number}"
        step.conds.mark(ConditionType.ROLLING_BACK, False, Reason.RESUMED, resumed)
    # Look again when a hang would be due, should nothing else happen before then.
    due = verdict.seconds_left + 1 if verdict is not None else None
    return step.decide(Phase.RUNNING, keep=last.number, requeue=due)


def _follow_attempt(step: Step) -> Decision:
    """The open attempt runs: follow its batch Job and pods."""
    observed, last = step.observed, step.last
    assert last is not None
    job = observed.attempt_job
    if job is None:
        if last.job_uid is None:  # intended, not created yet (or the operator died first)
            phase = Phase.ROLLING_BACK if step.rolling else Phase.PLANNED
            return step.decide(phase, keep=last.number, create=last.number)
        return _after_failure(
            step,
            Reason.ATTEMPT_DELETED,
            "its batch Job was deleted (by a person or a controller) while it ran",
        )
    uid = job["metadata"].get("uid")
    if last.job_uid != uid:
        step.attempts[-1] = last = last.model_copy(update={"job_uid": uid})
    if rollbacks.requested(step):
        return _start_next(step, waiting_for=None)
    if workers.completed(job, observed.pods, observed.nodes):
        step.end_attempt(Reason.COMPLETED)
        step.conds.mark(ConditionType.RUNNING, False, Reason.COMPLETED, "all workers finished")
        step.conds.mark(
            ConditionType.SUCCEEDED, True, Reason.COMPLETED, f"attempt {last.number} completed"
        )
        step.updates.update(completion_time=step.now, output=observed.output)
        return step.decide(Phase.SUCCEEDED, keep=last.number)
    if workers.attempt_failed(job, observed.pods):
        return _after_failure(step, *workers.failure(job, observed.pods))
    phases = [workers.phase(p) for p in observed.pods]
    running, finished = phases.count("Running"), phases.count("Succeeded")
    text = f"{running}/{observed.nodes} workers running (attempt {last.number})"
    if finished and running + finished >= observed.nodes:
        # Some workers finished, the others still run: still running.
        return step.decide(Phase.RUNNING, keep=last.number)
    if running >= observed.nodes:
        return _all_running(step, text)
    stuck = workers.blocked(observed.pods, observed.warnings, observed.nodes)
    if stuck is not None:
        reason, why = stuck
        step.conds.mark(ConditionType.RUNNING, False, reason, f"{text}: {why}", warn=True)
    else:
        step.conds.mark(ConditionType.RUNNING, False, Reason.WORKERS_STARTING, text)
    return step.decide(Phase.ROLLING_BACK if step.rolling else Phase.PLANNED, keep=last.number)


def _suspended_for(current: JobStatus, now: str) -> int:
    """Seconds of the suspension that ends now which count against the deadline clock (none of
    the time before the first start)."""
    suspended = ConditionType.SUSPENDED.value
    since = next((c.last_transition_time for c in current.conditions if c.type == suspended), "")
    if not current.start_time or not since or not now:
        return 0
    began = max(timestamps.epoch(since), timestamps.epoch(current.start_time))
    return max(0, round(timestamps.epoch(now) - began))


def _deadline_left(current: JobStatus, observed: Observed, suspended_seconds: int) -> float | None:
    """Seconds of activeDeadlineSeconds left (active time: since the first start, less time
    suspended); None without a deadline or before the first start."""
    if observed.deadline_seconds is None or not current.start_time or not observed.now:
        return None
    elapsed = timestamps.epoch(observed.now) - timestamps.epoch(current.start_time)
    return observed.deadline_seconds - (elapsed - suspended_seconds)


def derive(
    current: JobStatus,
    *,
    observed: Observed,
    plan: Plan | None,
    plan_error: str | None = None,
    waiting_for: str | None = None,
) -> Decision:
    """The next status of a job and what to do about its children."""
    step = Step(current, observed)
    if is_finished(current):
        return Decision(current.model_copy(update={"observed_generation": observed.generation}))
    if plan_error is not None:
        step.conds.mark(ConditionType.PLANNED, False, Reason.DOES_NOT_FIT, plan_error, warn=True)
        return _fail(step, Reason.DOES_NOT_FIT, plan_error)
    if plan is not None:
        step.conds.mark(ConditionType.PLANNED, True, Reason.PLAN_FITS, plan.reason)
        step.updates["plan"] = plan_status(plan)
    rollbacks.record_in_process(step)
    if observed.suspend:
        alive = observed.pods_alive
        stopped = f"suspended: stopping {alive} workers" if alive else "suspended: workers stopped"
        step.conds.mark(ConditionType.SUSPENDED, True, Reason.SUSPENDED, stopped)
        step.conds.mark(ConditionType.RUNNING, False, Reason.SUSPENDED, "suspended")
        step.end_attempt(Reason.SUSPENDED, "the job was suspended")
        return step.decide(Phase.SUSPENDED)
    suspended_seconds = current.suspended_seconds or 0
    if step.conds.true(ConditionType.SUSPENDED):
        suspended_seconds += _suspended_for(current, observed.now)
        step.updates["suspended_seconds"] = suspended_seconds
        step.conds.mark(
            ConditionType.SUSPENDED, False, Reason.RESUMED, "resumed from the newest checkpoint"
        )
    progress = report.progress(observed.report, observed.now)
    if progress is not None:
        step.updates["progress"] = progress
    step.attempts = report.with_resume_step(step.attempts, observed.report)
    step.attempts = report.with_steps(step.attempts, observed.report)
    chosen = report.interval(observed.report)
    if chosen is not None:
        step.updates["checkpoint_interval"] = chosen
    step.updates["checkpoints"] = report.checkpoints(observed.report, list(current.checkpoints))
    left = _deadline_left(current, observed, suspended_seconds)
    if left is not None and left < 0:
        message = f"activeDeadlineSeconds ({observed.deadline_seconds} s) exceeded"
        return _fail(step, Reason.DEADLINE_EXCEEDED, message)
    last = step.last
    if last is not None and last.end_time is None:
        decision = _follow_attempt(step)
    else:
        decision = _start_next(step, waiting_for=waiting_for)
    if left is not None and not is_finished(decision.status):
        decision.requeue_after = min(decision.requeue_after or left + 1, left + 1)
    return decision
