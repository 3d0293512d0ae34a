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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainkube import timestamps
from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.api.status import (
    MAX_ATTEMPTS,
    MAX_CHECKPOINTS,
    MAX_ROLLBACKS,
    Attempt,
    ConditionType,
    JobStatus,
    MemoryBreakdown,
    Output,
    Phase,
    PlanEscalation,
    PlanStatus,
    Reason,
    RecoveryState,
    RollbackRecord,
)
from trainkube.controller import goodput, hang, recovery, report, workers
from trainkube.controller.conditions import Conditions, is_finished
from trainkube.planner.plan import Plan

WAIT_FOR_INPUT_SECONDS = 10.0  # a missing Secret or claim is looked for again this often


@dataclass(frozen=True)
class Observed:
    """What the operator read (from its caches) for one reconcile."""

    generation: int
    nodes: int
    suspend: bool
    # The batch Job of the latest attempt in status (None: not created yet, or gone) and its pods.
    attempt_job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    # Warning events about that batch Job and its pods (the Job controller's FailedCreate, the
    # kubelet's FailedMount).
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # Numbers of every attempt whose batch Job or pods exist, and how many pods may still run.
    existing_attempts: tuple[int, ...] = ()
    pods_alive: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    output: Output | None = None
    now: str = ""
    deadline_seconds: int | None = None
    # A Secret or claim the pods need that does not exist: (reason, message).
    missing: tuple[Reason, str] | None = None
    # Recovery (training kinds only): the policies, the trainer's divergence report for the
    # latest attempt, the plan escalation the planner offers, the spec's learning rate.
    failure_policy: FailurePolicy | None = None
    rollback_policy: Rollback | None = None
    divergence: dict[str, Any] | None = None
    escalation: tuple[PlanEscalation, str] | None = None
    base_lr: float = 0.0
    # The value of the trainkube.io/rollback-to annotation (a step), when set.
    rollback_request: str | None = None


@dataclass
class Decision:
    status: JobStatus
    create_attempt: int | None = None  # create this attempt's children (once no other runs)
    delete_attempts: list[int] = field(default_factory=list)  # delete these attempts' Jobs
    requeue_after: float | None = None  # look again after this many seconds
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, reason, message


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


class _Step:
    """The status being derived in one reconcile: conditions, attempts and other updates."""

    def __init__(self, current: JobStatus, observed: Observed) -> None:
        self.current, self.observed, self.now = current, observed, observed.now
        self.conds = Conditions(list(current.conditions), observed.now, observed.generation)
        self.attempts = list(current.attempts)
        self.updates: dict[str, Any] = {}

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def recovery(self) -> RecoveryState:
        return self.updates.get("recovery") or self.current.recovery or RecoveryState()

    @property
    def rollbacks(self) -> list[RollbackRecord]:
        return list(self.updates.get("rollbacks", self.current.rollbacks))

    @property
    def rolling(self) -> bool:
        return self.conds.true(ConditionType.ROLLING_BACK)

    def end_attempt(self, reason: Reason, message: str | None = None) -> None:
        last = self.last
        if last is not None and last.end_time is None:
            self.attempts[-1] = last.model_copy(
                update={"end_time": self.now, "reason": reason, "message": message}
            )

    def start_attempt(self) -> int:
        """Append the next attempt, with what it inherits; the one-shot parts of the recovery
        state (where to resume, the back-off) are used up by it."""
        number = self.last.number + 1 if self.last else 1
        state = self.recovery
        self.attempts.append(
            Attempt(
                number=number,
                start_time=self.now,
                resumed_from_step=0 if state.fresh_start else state.resume_step,
                rollback_to=0 if state.fresh_start else state.resume_step,
                learning_rate=self.observed.base_lr * state.learning_rate_factor,
            )
        )
        if self.current.recovery is not None or "recovery" in self.updates:
            self.updates["recovery"] = state.model_copy(
                update={"resume_step": None, "fresh_start": False, "not_before": None}
            )
        self.conds.mark(
            ConditionType.RUNNING,
            False,
            Reason.WORKERS_STARTING,
            # What `_follow_attempt` says until a worker runs: no write of its own for that.
            f"0/{self.observed.nodes} workers running (attempt {number})",
            # The first attempt's start is the PlanFits event's moment: no Event of its own.
            event=number > 1,
        )
        return number

    def decide(
        self,
        phase: Phase,
        *,
        keep: int | None = None,
        create: int | None = None,
        requeue: float | None = None,
    ) -> Decision:
        """The decision: status with the updates, and every attempt Job but `keep` deleted."""
        updates = dict(self.updates)
        if "rollbacks" in updates:
            updates["rollbacks"] = updates["rollbacks"][-MAX_ROLLBACKS:]
        if "checkpoints" in updates:
            updates["checkpoints"] = updates["checkpoints"][-MAX_CHECKPOINTS:]
        status = self.current.model_copy(
            update={
                "observed_generation": self.observed.generation,
                "conditions": self.conds.items,
                "phase": phase,
                "attempts": self.attempts[-MAX_ATTEMPTS:],
                **updates,
            }
        )
        step_seconds = (self.observed.report.get("progress.json") or {}).get("stepSeconds")
        measured = float(step_seconds) if isinstance(step_seconds, int | float) else None
        found = goodput.compute(status, self.now, measured)
        if found is not None:
            status = status.model_copy(update={"goodput": found})
        delete = [n for n in self.observed.existing_attempts if n != keep]
        return Decision(status, create, delete, requeue, self.conds.events)


def _fail(step: _Step, reason: Reason, message: str) -> Decision:
    step.end_attempt(reason, message)
    step.conds.mark(ConditionType.RUNNING, False, reason, message, warn=True)
    step.conds.mark(ConditionType.FAILED, True, reason, message, warn=True)
    step.updates["completion_time"] = step.now
    return step.decide(Phase.FAILED)


def _seconds_until(moment: str | None, now: str) -> float:
    if not moment or not now:
        return 0.0
    return timestamps.epoch(moment) - timestamps.epoch(now)


def _start_next(step: _Step, *, waiting_for: str | None) -> Decision:
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


def _after_failure(step: _Step, reason: Reason, message: str) -> Decision:
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


def _record_in_process_rollbacks(step: _Step) -> None:
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


def _requested_rollback(step: _Step) -> Decision | None:
    """A person asked for a rollback (annotation trainkube.io/rollback-to=<step>): end the
    running attempt and start the next from the newest checkpoint at or before that step."""
    observed, current = step.observed, step.current
    raw = observed.rollback_request
    state = step.recovery
    if raw is None or raw == state.handled_rollback_request:
        return None
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
        return None
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
    return _start_next(step, waiting_for=None)


def _all_running(step: _Step, text: str) -> Decision:
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


def _follow_attempt(step: _Step) -> Decision:
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
    requested = _requested_rollback(step)
    if requested is not None:
        return requested
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
    step = _Step(current, observed)
    if is_finished(current):
        return Decision(current.model_copy(update={"observed_generation": observed.generation}))
    if plan_error is not None:
        step.conds.mark(ConditionType.PLANNED, False, Reason.DOES_NOT_FIT, plan_error, warn=True)
        return _fail(step, Reason.DOES_NOT_FIT, plan_error)
    if plan is not None:
        step.conds.mark(ConditionType.PLANNED, True, Reason.PLAN_FITS, plan.reason)
        step.updates["plan"] = plan_status(plan)
    _record_in_process_rollbacks(step)
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
