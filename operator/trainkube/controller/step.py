"""One reconcile's step, for `derive` (controller/status.py): what the operator observed (from
its caches), the status being derived from it (conditions, attempts, other updates), and the
decision it ends in. Pure data and bookkeeping: no API call, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.api.status import (
    MAX_ATTEMPTS,
    MAX_CHECKPOINTS,
    MAX_ROLLBACKS,
    Attempt,
    ConditionType,
    JobStatus,
    Output,
    Phase,
    PlanEscalation,
    Reason,
    RecoveryState,
    RollbackRecord,
)
from trainkube.controller import goodput
from trainkube.controller.conditions import Conditions


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


class Step:
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
