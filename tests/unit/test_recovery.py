"""Recovery decisions (pure): restarts with back-off, out-of-memory escalation, rollbacks after
divergence, and the budgets that end them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_controller import JOB, PLAN, _batch_job, _observed, _pod
from trainkube.api.model import ArchitectureFamily
from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.api.status import CheckpointRecord, JobStatus, PlanEscalation
from trainkube.controller.status import derive
from trainkube.planner import PlanRequest, Shape, plan
from trainkube.planner.escalate import escalate
from trainkube.planner.memory import GiB

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"


def _running() -> JobStatus:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    both = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    return derive(first, observed=both, plan=PLAN).status


def _failed(code: int, reason: str = "Error", **kw: Any) -> Any:
    return _observed(
        attempt_job=_batch_job("Failed"),
        pods=[_pod(0, "Running"), _pod(1, "Failed", code=code, reason=reason)],
        failure_policy=kw.pop("policy", FailurePolicy(max_restarts=2, backoff_seconds=30)),
        rollback_policy=kw.pop("rollback", Rollback(steps_back=10, lr_factor=0.5, skip_batches=5)),
        base_lr=3e-3,
        **kw,
    )


def test_a_failed_worker_restarts_after_the_back_off() -> None:
    decision = derive(_running(), observed=_failed(1), plan=PLAN)
    assert decision.create_attempt is None
    assert decision.status.recovery is not None
    assert decision.status.recovery.restarts == 1
    assert decision.status.recovery.not_before == "2026-01-01T00:00:30Z"
    running = next(c for c in decision.status.conditions if c.type == "Running")
    assert running.reason == "Restarting"
    assert "restart 1 of 2 from the newest checkpoint in 30 s" in running.message
    later = derive(decision.status, observed=replace(_failed(1), now=LATER), plan=PLAN)
    assert later.create_attempt == 2
    assert [a.number for a in later.status.attempts] == [1, 2]
    assert later.events == [("Normal", "WorkersStarting", "0/2 workers running (attempt 2)")]


def test_the_restart_budget_ends_in_failed() -> None:
    policy = FailurePolicy(max_restarts=0)
    decision = derive(_running(), observed=_failed(1, policy=policy), plan=PLAN)
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == "RestartsExhausted"
    assert "all 0 restarts (failurePolicy.maxRestarts) are used" in failed.message
    assert decision.status.phase == "Failed"


def test_out_of_memory_restarts_at_once_with_the_escalated_plan() -> None:
    escalation = (PlanEscalation(zero_stage=2, micro_batch_size=2), "micro-batch 4 -> 2")
    decision = derive(
        _running(), observed=_failed(137, "OOMKilled", escalation=escalation), plan=PLAN
    )
    assert decision.create_attempt == 2
    assert decision.status.recovery is not None
    assert decision.status.recovery.escalation == escalation[0]
    reasons = [e[1] for e in decision.events]
    assert "PlanEscalated" in reasons


def test_out_of_memory_with_no_smaller_plan_fails() -> None:
    decision = derive(_running(), observed=_failed(137, "OOMKilled", escalation=None), plan=PLAN)
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == "OutOfMemory"
    assert "no plan uses less memory" in failed.message


def _with_checkpoints(status: JobStatus) -> JobStatus:
    checkpoints = [
        CheckpointRecord(step=s, data_position=s + 3, loss="2.0") for s in (10, 20, 30, 40, 50)
    ]
    return status.model_copy(update={"checkpoints": checkpoints})


def test_divergence_rolls_back_before_the_spike_with_a_lower_learning_rate() -> None:
    divergence = {"step": 46, "loss": 9.5, "rule": "spike: loss 9.5 > mean 2 + 6 sigma"}
    status = _with_checkpoints(_running())
    decision = derive(status, observed=_failed(10, divergence=divergence), plan=PLAN)
    assert decision.create_attempt == 2
    [rollback] = decision.status.rollbacks
    assert (rollback.detected_at_step, rollback.from_checkpoint_step) == (46, 30)
    assert rollback.learning_rate == pytest.approx(1.5e-3)
    assert rollback.skipped_batches == 5
    recovery = decision.status.recovery
    assert recovery is not None
    assert recovery.learning_rate_factor == 0.5
    assert recovery.resume_step is None  # used up by attempt 2, which resumes from step 30
    assert [(r.start, r.end) for r in recovery.skip_batches] == [(33, 38)]
    assert recovery.restarts == 0  # rollbacks do not use the restart budget
    rolling = next(c for c in decision.status.conditions if c.type == "RollingBack")
    assert rolling.status == "True"
    assert decision.status.phase == "RollingBack"
    assert decision.status.attempts[-1].resumed_from_step == 30


def test_a_spike_before_any_early_checkpoint_starts_over_from_step_zero() -> None:
    divergence = {"step": 12, "loss": 9.5, "rule": "nan"}
    decision = derive(
        _with_checkpoints(_running()), observed=_failed(10, divergence=divergence), plan=PLAN
    )
    recovery = decision.status.recovery
    assert recovery is not None
    assert decision.status.attempts[-1].resumed_from_step == 0  # a fresh start
    assert decision.status.rollbacks[0].from_checkpoint_step == 0


def test_more_spikes_than_max_rollbacks_fail_with_a_clear_reason() -> None:
    divergence = {"step": 46, "loss": 9.5, "rule": "nan"}
    rollback = Rollback(max_rollbacks=0)
    decision = derive(
        _running(), observed=_failed(10, divergence=divergence, rollback=rollback), plan=PLAN
    )
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == "RollbacksExhausted"
    assert "after 0 rollbacks; maxRollbacks is 0" in failed.message


def test_escalation_goes_smaller_micro_batch_then_recompute_then_next_stage() -> None:
    shape = Shape(ArchitectureFamily.LLAMA, 32, 4096, 32, 32, 11008, 32000)
    request = PlanRequest(
        shape=shape,
        sequence_length=2048,
        global_batch_size=256,
        nodes=1,
        gpus_per_node=8,
        gpu_memory=141 * GiB,
        cpu_memory_per_node=2048 * GiB,
    )
    current = plan(request)
    steps = []
    for _ in range(12):
        found = escalate(replace(request, overrides=request.overrides), current)
        if found is None:
            break
        current, overrides, what = found
        request = replace(request, overrides=overrides)
        steps.append(what)
        assert current.micro_batch_size * current.gradient_accumulation_steps * 8 == 256
    assert steps[0].startswith("micro-batch ")
    assert any(s == "activation checkpointing on" for s in steps)
    assert any("ZeRO-" in s and "->" in s for s in steps)


def test_a_requested_rollback_restarts_from_the_checkpoint_at_or_before_the_step() -> None:
    status = _with_checkpoints(_running())
    seen = _observed(
        attempt_job=_batch_job(),
        pods=[_pod(0, "Running"), _pod(1, "Running")],
        rollback_request="25",
        base_lr=3e-3,
    )
    decision = derive(status, observed=seen, plan=PLAN)
    assert decision.create_attempt == 2
    assert decision.status.phase == "RollingBack"
    assert decision.status.rollbacks[0].from_checkpoint_step == 20
    assert decision.status.rollbacks[0].rule == "requested: trainkube.io/rollback-to=25"
    assert decision.status.recovery is not None
    assert decision.status.attempts[-1].resumed_from_step == 20
    assert decision.status.attempts[-2].reason == "RollbackRequested"
    # Acted on once: the same annotation value does nothing more.
    again = derive(decision.status, observed=seen, plan=PLAN)
    assert again.create_attempt is None
    assert len(again.status.rollbacks) == 1
