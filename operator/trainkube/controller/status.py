"""Status from what is observed: pure functions, so every transition is testable without a
cluster. `derive` takes the job's current status, the plan (or why there is none), the latest
attempt's batch Job and pods, and the trainer's report, and returns the new status, what to do
about children, and the Events that tell the story in `kubectl describe`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trainkube import timestamps
from trainkube.api.common import FailurePolicy, Rollback
from trainkube.api.evaljob import GateResult, MetricResult
from trainkube.api.status import (
    Attempt,
    CheckpointRecord,
    Condition,
    ConditionType,
    JobStatus,
    MemoryBreakdown,
    Output,
    Phase,
    PlanEscalation,
    PlanStatus,
    Progress,
    Reason,
    RecoveryState,
    RollbackRecord,
)
from trainkube.controller import recovery
from trainkube.planner.plan import Plan

TERMINAL = (ConditionType.SUCCEEDED, ConditionType.FAILED)


@dataclass(frozen=True)
class Observed:
    """What the operator read for one reconcile."""

    generation: int
    nodes: int
    suspend: bool
    attempt_job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
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
    create_attempt: int | None = None
    delete_attempt: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, reason, message


def condition(conditions: list[Condition], kind: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def _true(conditions: list[Condition], kind: ConditionType) -> bool:
    found = condition(conditions, kind)
    return found is not None and found.status == "True"


def is_true(status: JobStatus, kind: ConditionType) -> bool:
    return _true(status.conditions, kind)


def set_condition(
    conditions: list[Condition],
    kind: ConditionType,
    value: bool,
    reason: Reason,
    message: str,
    *,
    now: str,
    generation: int,
) -> tuple[list[Condition], bool]:
    """Conditions with `kind` set; whether its status or reason changed (an Event-worthy change)."""
    old = condition(conditions, kind)
    text = "True" if value else "False"
    changed = old is None or old.status != text or old.reason != reason
    new = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message,
        last_transition_time=now if old is None or old.status != text else old.last_transition_time,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != kind] + [new], changed


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


def _job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def attempt_failed(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """Whether an attempt's batch Job failed, or any of its workers did."""
    return bool(_job_condition(job, "Failed")) or any(
        (p.get("status") or {}).get("phase") == "Failed" for p in pods
    )


def _failed_pod_message(pods: list[dict[str, Any]]) -> tuple[Reason, str]:
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (state.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                code, why = terminated.get("exitCode"), terminated.get("reason") or "Error"
                index = (pod["metadata"].get("annotations") or {}).get(
                    "batch.kubernetes.io/job-completion-index", "?"
                )
                reason = (
                    Reason.OUT_OF_MEMORY
                    if why == "OOMKilled" or code == 11
                    else Reason.WORKER_FAILED
                )
                if code == 10:
                    reason = Reason.DIVERGED
                if code == 12:
                    reason = Reason.GATES_FAILED
                detail = terminated.get("message") or ""
                text = f"worker {index} ({pod['metadata']['name']}) exited with code {code} ({why})"
                return reason, text + (f": {detail.strip()[:500]}" if detail else "")
    return Reason.WORKER_FAILED, "a worker failed"


def _progress(report: dict[str, Any], now: str) -> Progress | None:
    progress = report.get("progress.json")
    if not progress:
        return None
    step, total = progress.get("step"), progress.get("totalSteps")
    loss = progress.get("loss")
    return Progress(
        step=int(step or 0),
        total_steps=total,
        steps=f"{step}/{total}" if step is not None and total else None,
        loss=f"{loss:.4f}" if isinstance(loss, int | float) else None,
        validation_loss=f"{progress['validationLoss']:.4f}"
        if isinstance(progress.get("validationLoss"), int | float)
        else None,
        learning_rate=progress.get("learningRate"),
        tokens_per_second=progress.get("tokensPerSecond"),
        updated=progress.get("updated") or now,
    )


def _checkpoints(report: dict[str, Any], known: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """Checkpoints on the volume: every one reported, less those retention has removed; one the
    trainer skipped on resuming (its checksums did not verify) is kept, marked not valid."""
    by_step = {c.step: c for c in known}
    kept: list[int] | None = None
    for event in (report.get("progress.json") or {}).get("events", []):
        if event.get("type") == "checkpointSkipped" and isinstance(event.get("step"), int):
            step = event["step"]
            record = by_step.get(step) or CheckpointRecord(step=step, time=event.get("time"))
            by_step[step] = record.model_copy(update={"valid": False})
        if event.get("type") == "checkpoint":
            kept = event.get("kept", kept)
            by_step[int(event["step"])] = CheckpointRecord(
                step=int(event["step"]),
                loss=f"{event['loss']:.4f}" if isinstance(event.get("loss"), int | float) else None,
                time=event.get("time"),
                size_bytes=event.get("bytes"),
                path=event.get("path"),
                data_position=event.get("dataPosition"),
            )
    return [by_step[s] for s in sorted(by_step) if kept is None or s in kept]


def eval_results(report: dict[str, Any]) -> dict[str, Any]:
    """An EvalJob's results, gate verdicts and passed/total from the trainer's last report."""
    progress = report.get("progress.json") or {}
    if "results" not in progress:
        return {}
    return {
        "results": [MetricResult.model_validate(r) for r in progress["results"]],
        "gates": [GateResult.model_validate(g) for g in progress.get("gates", [])],
        "gates_passed": progress.get("gatesPassed"),
    }


def _with_resume_step(attempts: list[Attempt], report: dict[str, Any]) -> list[Attempt]:
    """The step the latest attempt resumed from, as its trainer reported it."""
    progress = report.get("progress.json") or {}
    if not attempts or progress.get("attempt") != attempts[-1].number:
        return attempts
    for event in progress.get("events", []):
        if event.get("type") == "resumed" and attempts[-1].resumed_from_step is None:
            attempts[-1] = attempts[-1].model_copy(update={"resumed_from_step": event["step"]})
    return attempts


def parse_report(data: dict[str, str] | None) -> dict[str, Any]:
    """The report ConfigMap's data, parsed (unreadable documents are ignored)."""
    parsed: dict[str, Any] = {}
    for key, text in (data or {}).items():
        try:
            parsed[key] = json.loads(text)
        except ValueError:
            continue
    return parsed


@dataclass
class _Conditions:
    """Conditions being updated in one reconcile, and the Events their changes make."""

    items: list[Condition]
    now: str
    generation: int
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def mark(
        self, kind: ConditionType, value: bool, reason: Reason, message: str, warn: bool = False
    ) -> None:
        self.items, changed = set_condition(
            self.items, kind, value, reason, message, now=self.now, generation=self.generation
        )
        event = ("Warning" if warn else "Normal", reason.value, message)
        if changed and (value or kind is ConditionType.RUNNING) and event not in self.events:
            self.events.append(event)


def _after_failure(
    conds: _Conditions,
    current: JobStatus,
    observed: Observed,
    attempts: list[Attempt],
    updates: dict[str, Any],
) -> Phase | None:
    """Decide about a failed attempt (once); None when the next attempt may start now."""
    last, now = attempts[-1], observed.now
    if last.end_time is None:
        reason, message = _failed_pod_message(observed.pods)
        message = f"attempt {last.number} failed: {message}"
        attempts[-1] = last.model_copy(
            update={"end_time": now, "reason": reason, "message": message}
        )
        outcome = (
            recovery.after_failure(
                recovery.Failure(last.number, reason, message, observed.divergence),
                failure_policy=observed.failure_policy,
                rollback=observed.rollback_policy or Rollback(enabled=False),
                status=current,
                escalation=observed.escalation,
                base_lr=observed.base_lr,
                now=now,
            )
            if observed.failure_policy is not None
            else recovery.Outcome(terminal=(reason, message))
        )
        if outcome.terminal is not None:
            why, text = outcome.terminal
            conds.mark(ConditionType.RUNNING, False, why, text, warn=True)
            conds.mark(ConditionType.FAILED, True, why, text, warn=True)
            updates["completion_time"] = now
            return Phase.FAILED
        updates["recovery"] = outcome.recovery
        if outcome.rollback is not None:
            updates["rollbacks"] = [*current.rollbacks, outcome.rollback]
            conds.mark(ConditionType.ROLLING_BACK, True, outcome.reason, outcome.message, warn=True)
        conds.mark(ConditionType.RUNNING, False, outcome.reason, outcome.message, warn=True)
    state = updates.get("recovery") or current.recovery
    if state is None:  # decided by an operator without recovery: final
        return Phase.FAILED
    if state.not_before and state.not_before > now:
        rolling = _true(conds.items, ConditionType.ROLLING_BACK)
        return Phase.ROLLING_BACK if rolling else Phase.PENDING
    return None


def _next_attempt(
    conds: _Conditions,
    current: JobStatus,
    observed: Observed,
    attempts: list[Attempt],
    updates: dict[str, Any],
) -> tuple[Phase, int]:
    number = attempts[-1].number + 1
    state = updates.get("recovery") or current.recovery
    attempts.append(
        Attempt(
            number=number,
            start_time=observed.now,
            resumed_from_step=state.resume_step if state else None,
            learning_rate=observed.base_lr * (state.learning_rate_factor if state else 1.0),
        )
    )
    conds.mark(
        ConditionType.RUNNING, False, Reason.WORKERS_STARTING, f"attempt {number}: creating workers"
    )
    rolling = _true(conds.items, ConditionType.ROLLING_BACK)
    return (Phase.ROLLING_BACK if rolling else Phase.PENDING), number


def _observe_attempt(
    conds: _Conditions,
    current: JobStatus,
    observed: Observed,
    attempts: list[Attempt],
    updates: dict[str, Any],
) -> tuple[Phase, int | None]:
    """Phase from the latest attempt's batch Job and pods; ends the attempt when it ended.
    Also the number of the attempt to start next, when one is due."""
    job, now = observed.attempt_job, observed.now
    last = attempts[-1] if attempts else Attempt(number=1, start_time=now)
    if not attempts:
        attempts.append(last)
    if _job_condition(job, "Complete"):
        attempts[-1] = last.model_copy(update={"end_time": now, "reason": Reason.COMPLETED})
        conds.mark(ConditionType.RUNNING, False, Reason.COMPLETED, "all workers finished")
        conds.mark(
            ConditionType.SUCCEEDED, True, Reason.COMPLETED, f"attempt {last.number} completed"
        )
        updates.update(completion_time=now, output=observed.output)
        return Phase.SUCCEEDED, None
    if attempt_failed(job, observed.pods):
        phase = _after_failure(conds, current, observed, attempts, updates)
        if phase is not None:
            return phase, None
        return _next_attempt(conds, current, observed, attempts, updates)
    phases = [(p.get("status") or {}).get("phase") for p in observed.pods]
    running, finished = phases.count("Running"), phases.count("Succeeded")
    text = f"{running}/{observed.nodes} workers running (attempt {last.number})"
    if finished and running + finished >= observed.nodes:
        # Between the last worker's exit and the Job's Complete condition: still running.
        return Phase.RUNNING, None
    rolling = _true(conds.items, ConditionType.ROLLING_BACK)
    if running >= observed.nodes:
        conds.mark(ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, text)
        if rolling:
            resumed = f"rollback done: training resumed in attempt {last.number}"
            conds.mark(ConditionType.ROLLING_BACK, False, Reason.RESUMED, resumed)
        return Phase.RUNNING, None
    conds.mark(ConditionType.RUNNING, False, Reason.WORKERS_STARTING, text)
    return (Phase.ROLLING_BACK if rolling else Phase.PLANNED), None


def _requested_rollback(
    conds: _Conditions,
    current: JobStatus,
    observed: Observed,
    attempts: list[Attempt],
    updates: dict[str, Any],
) -> int | None:
    """A person asked for a rollback (annotation trainkube.io/rollback-to=<step>): stop the
    running attempt and start the next from the newest checkpoint at or before that step."""
    raw = observed.rollback_request
    state = current.recovery or RecoveryState()
    if raw is None or raw == state.handled_rollback_request or not attempts:
        return None
    try:
        step = int(raw)
    except ValueError:
        conds.mark(
            ConditionType.ROLLING_BACK,
            False,
            Reason.INVALID_SPEC,
            f"annotation trainkube.io/rollback-to={raw!r} is not a step number; nothing done",
            warn=True,
        )
        updates["recovery"] = state.model_copy(update={"handled_rollback_request": raw})
        return None
    earlier = [c for c in current.checkpoints if c.step <= step and c.valid]
    target = max(earlier, key=lambda c: c.step) if earlier else None
    origin = f"checkpoint step-{target.step}" if target else "step 0 (no checkpoint that early)"
    message = f"rollback to step {step} requested by annotation: restarting from {origin}"
    record = RollbackRecord(
        detected_at_step=int(current.progress.step if current.progress else 0),
        rule=f"requested: trainkube.io/rollback-to={raw}",
        from_checkpoint_step=target.step if target else 0,
        learning_rate=observed.base_lr * state.learning_rate_factor,
        time=observed.now,
    )
    updates["rollbacks"] = [*current.rollbacks, record]
    updates["recovery"] = state.model_copy(
        update={
            "resume_step": target.step if target else None,
            "fresh_start": target is None,
            "not_before": observed.now,
            "handled_rollback_request": raw,
        }
    )
    last = attempts[-1]
    if last.end_time is None:
        attempts[-1] = last.model_copy(
            update={
                "end_time": observed.now,
                "reason": Reason.ROLLBACK_REQUESTED,
                "message": message,
            }
        )
    conds.mark(ConditionType.ROLLING_BACK, True, Reason.ROLLBACK_REQUESTED, message)
    _, number = _next_attempt(conds, current, observed, attempts, updates)
    return number


def _past_deadline(current: JobStatus, observed: Observed, suspended_seconds: int) -> bool:
    """Active time (since the first start, less time suspended) beyond activeDeadlineSeconds."""
    if observed.deadline_seconds is None or not current.start_time or not observed.now:
        return False
    elapsed = timestamps.epoch(observed.now) - timestamps.epoch(current.start_time)
    return elapsed - suspended_seconds > observed.deadline_seconds


def _suspended_for(current: JobStatus, now: str) -> int:
    """Seconds of the suspension that ends now which count against the deadline clock (none of
    the time before the first start)."""
    suspended = ConditionType.SUSPENDED.value
    since = next((c.last_transition_time for c in current.conditions if c.type == suspended), "")
    if not current.start_time or not since or not now:
        return 0
    began = max(timestamps.epoch(since), timestamps.epoch(current.start_time))
    return max(0, round(timestamps.epoch(now) - began))


def finished_at(status: JobStatus) -> float | None:
    """When a finished job finished (epoch seconds), for ttlSecondsAfterFinished."""
    if not any(is_true(status, kind) for kind in TERMINAL) or not status.completion_time:
        return None
    return timestamps.epoch(status.completion_time)


def _deadline_exceeded(
    conds: _Conditions,
    observed: Observed,
    attempts: list[Attempt],
    updates: dict[str, Any],
    finish: Any,
) -> Decision:
    now = observed.now
    message = f"activeDeadlineSeconds ({observed.deadline_seconds} s) exceeded"
    conds.mark(ConditionType.RUNNING, False, Reason.DEADLINE_EXCEEDED, message, warn=True)
    conds.mark(ConditionType.FAILED, True, Reason.DEADLINE_EXCEEDED, message, warn=True)
    if attempts and attempts[-1].end_time is None:
        attempts[-1] = attempts[-1].model_copy(
            update={"end_time": now, "reason": Reason.DEADLINE_EXCEEDED}
        )
    decision: Decision = finish(Phase.FAILED, attempts=attempts, completion_time=now, **updates)
    decision.delete_attempt = observed.attempt_job is not None
    return decision


def derive(
    current: JobStatus,
    *,
    observed: Observed,
    plan: Plan | None,
    plan_error: str | None = None,
    waiting_for: str | None = None,
) -> Decision:
    """The next status of a job and what to do about its children."""
    now = observed.now
    conds = _Conditions(list(current.conditions), now, observed.generation)
    status = current.model_copy(update={"observed_generation": observed.generation})

    def finish(phase: Phase, **updates: Any) -> Decision:
        new = status.model_copy(update={"conditions": conds.items, "phase": phase, **updates})
        return Decision(new, events=conds.events)

    if any(is_true(current, kind) for kind in TERMINAL):
        return Decision(status)  # finished jobs keep their status
    if plan_error is not None:
        conds.mark(ConditionType.PLANNED, False, Reason.DOES_NOT_FIT, plan_error, warn=True)
        conds.mark(ConditionType.FAILED, True, Reason.DOES_NOT_FIT, plan_error, warn=True)
        return finish(Phase.FAILED, completion_time=now)
    if waiting_for is not None:
        conds.mark(ConditionType.PLANNED, False, Reason.WAITING_FOR_INPUT, waiting_for)
        return finish(Phase.PENDING)
    updates: dict[str, Any] = {}
    if plan is not None:
        conds.mark(ConditionType.PLANNED, True, Reason.PLAN_FITS, plan.reason)
        updates["plan"] = plan_status(plan)
    if observed.suspend:
        conds.mark(ConditionType.SUSPENDED, True, Reason.SUSPENDED, "suspended: workers stopped")
        conds.mark(ConditionType.RUNNING, False, Reason.SUSPENDED, "suspended")
        decision = finish(Phase.SUSPENDED, **updates)
        decision.delete_attempt = observed.attempt_job is not None
        return decision
    suspended_seconds = current.suspended_seconds or 0
    if is_true(current, ConditionType.SUSPENDED):
        suspended_seconds += _suspended_for(current, now)
        updates["suspended_seconds"] = suspended_seconds
        conds.mark(
            ConditionType.SUSPENDED, False, Reason.RESUMED, "resumed from the newest checkpoint"
        )
    progress = _progress(observed.report, now)
    if progress is not None:
        updates["progress"] = progress
    attempts = _with_resume_step(list(current.attempts), observed.report)
    updates["checkpoints"] = _checkpoints(observed.report, list(current.checkpoints))
    if _past_deadline(current, observed, suspended_seconds):
        return _deadline_exceeded(conds, observed, attempts, updates, finish)
    if observed.attempt_job is None and observed.missing is not None:
        reason, message = observed.missing
        conds.mark(ConditionType.RUNNING, False, reason, message, warn=True)
        return finish(Phase.PENDING, **updates)
    if observed.attempt_job is None:
        number = len(attempts) + 1
        attempts.append(Attempt(number=number, start_time=now))
        conds.mark(
            ConditionType.RUNNING,
            False,
            Reason.WORKERS_STARTING,
            f"attempt {number}: creating workers",
        )
        decision = finish(
            Phase.PLANNED, attempts=attempts, start_time=current.start_time or now, **updates
        )
        decision.create_attempt = number
        return decision
    requested = _requested_rollback(conds, current, observed, attempts, updates)
    if requested is not None:
        decision = finish(Phase.ROLLING_BACK, attempts=attempts, **updates)
        decision.create_attempt = requested
        return decision
    phase, next_number = _observe_attempt(conds, current, observed, attempts, updates)
    decision = finish(phase, attempts=attempts, **updates)
    decision.create_attempt = next_number
    return decision
