"""Disruptions spend no restart budget, and a configuration error spends none either: it ends
the job at once (pure status derivation, no cluster)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_controller import PLAN, _batch_job, _observed, _pod
from tests.unit.test_recovery import _running
from trainkube.api.recovery import FailurePolicy, Rollback
from trainkube.api.status import JobStatus, RecoveryState
from trainkube.controller import children
from trainkube.controller.status import derive
from trainkube.exitcodes import ExitCode

POLICY = FailurePolicy(max_restarts=1, backoff_seconds=30, max_disruptions=2)


def _evicted(index: int) -> dict[str, Any]:
    pod = _pod(index, "Failed", code=143, reason="Error")
    pod["status"]["conditions"] = [
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting",
        }
    ]
    return pod


def _derive(current: JobStatus, **observed: Any) -> Any:
    return derive(
        current,
        observed=_observed(
            failure_policy=POLICY, rollback_policy=Rollback(enabled=False), **observed
        ),
        plan=PLAN,
    )


def test_an_evicted_worker_restarts_the_gang_at_once_without_spending_a_restart() -> None:
    pods = [_pod(0, "Failed", code=1), _evicted(1)]
    decision = _derive(_running(), attempt_job=_batch_job("Failed"), pods=pods)
    status = decision.status
    ended = status.attempts[0]
    assert ended.reason == "Disrupted"
    assert "worker 1 (w-1) was disrupted: EvictionByEvictionAPI: Eviction API: evicting" in (
        ended.message or ""
    )
    assert status.recovery is not None
    assert (status.recovery.restarts, status.recovery.disruptions) == (0, 1)
    assert decision.create_attempt == 2  # at once, no back-off: the cluster was at fault
    said = [message for _, reason, message in decision.events if reason == "Restarting"]
    assert said
    assert "not counted against maxRestarts" in said[0]


def test_a_disruption_after_the_pod_is_gone_is_read_from_the_jobs_failed_condition() -> None:
    job = _batch_job("Failed")
    job["status"]["conditions"][0].update(
        reason="PodFailurePolicy",
        message="Pod ns/w-1 has condition DisruptionTarget matching FailJob rule at index 0",
    )
    status = _derive(_running(), attempt_job=job, pods=[]).status
    assert status.attempts[0].reason == "Disrupted"
    assert "has condition DisruptionTarget" in (status.attempts[0].message or "")


def test_disruptions_beyond_max_disruptions_fail_the_job() -> None:
    current = _running().model_copy(update={"recovery": RecoveryState(disruptions=2)})
    decision = _derive(current, attempt_job=_batch_job("Failed"), pods=[_evicted(0)])
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == "DisruptionsExhausted"
    assert "failurePolicy.maxDisruptions" in failed.message


def test_a_configuration_error_fails_the_job_at_once_with_restarts_left() -> None:
    pods = [_pod(0, "Failed", code=int(ExitCode.INVALID_CONFIG)), _pod(1, "Running")]
    decision = _derive(_running(), attempt_job=_batch_job("Failed"), pods=pods)
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == "ConfigurationError"
    assert "a restart would meet the same error" in failed.message
    assert decision.status.phase == "Failed"
    assert decision.create_attempt is None
    assert len(decision.status.attempts) == 1


def test_attempt_jobs_fail_at_once_on_a_disrupted_worker() -> None:
    from tests.unit.test_controller import JOB, PRETRAIN, _spec  # noqa: PLC0415

    manifest = children.worker_job(PRETRAIN, JOB, attempt=1, spec=_spec(JOB), image="t:1")
    assert manifest["spec"]["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }


def test_a_worker_being_evicted_ends_the_attempt_before_it_terminates() -> None:
    evicting = _evicted(1)
    evicting["status"]["phase"] = "Running"  # deleted, still shutting down
    evicting["status"]["containerStatuses"] = [{"state": {"running": {}}}]
    decision = _derive(_running(), attempt_job=_batch_job(), pods=[_pod(0, "Running"), evicting])
    assert decision.status.attempts[0].reason == "Disrupted"
    assert 1 in decision.delete_attempts
