"""Pod security and what the workers' creators say: the trainer container's securityContext
(restricted by default, loosened only through the job's template), the report Role bound to a
user's service account, and the Warning events (the Job controller's FailedCreate, the
kubelet's FailedMount) that become the job's Running condition. Pure functions, no cluster."""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.test_controller import JOB, PRETRAIN, _batch_job, _observed, _pending_pod, _spec
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.controller import children
from trainkube.controller.status import derive
from trainkube.planner import plan
from trainkube.planner.from_spec import request_for

PLAN = plan(request_for(JOB, lambda ref: None))
PSA = (
    'Error creating: pods "tiny-pretrain-ltj-a1-0-x" is forbidden: violates PodSecurity '
    '"restricted:latest": unrestricted capabilities (container "trainer" must not include '
    '"IPC_LOCK" in securityContext.capabilities.add)'
)


def _with_template(**template: Any) -> tuple[dict[str, Any], LLMTrainingJob]:
    body = copy.deepcopy(PRETRAIN)
    body["spec"].setdefault("template", {}).update(template)
    return body, LLMTrainingJob.model_validate(body)


def _container(body: dict[str, Any], job: LLMTrainingJob) -> dict[str, Any]:
    manifest = children.worker_job(body, job, attempt=1, spec=_spec(job), image="trainer:1")
    container: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return container


def test_default_trainer_container_drops_every_capability_and_privilege_escalation() -> None:
    container = _container(PRETRAIN, JOB)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def test_template_security_context_is_merged_over_the_restricted_defaults() -> None:
    body, job = _with_template(securityContext={"capabilities": {"add": ["IPC_LOCK"]}})
    assert _container(body, job)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["IPC_LOCK"]},
    }
    # The defaults the module keeps are not changed by one job's additions.
    assert children.CONTAINER_SECURITY["capabilities"] == {"drop": ["ALL"]}


def test_report_role_is_bound_to_the_jobs_account_and_to_the_templates_account() -> None:
    body, job = _with_template(serviceAccountName="team-trainer")
    binding = children.worker_rbac(body, job.spec.template)[2]
    assert [s["name"] for s in binding["subjects"]] == ["tiny-pretrain-ltj-worker", "team-trainer"]
    only_own = children.worker_rbac(PRETRAIN, JOB.spec.template)[2]
    assert [s["name"] for s in only_own["subjects"]] == ["tiny-pretrain-ltj-worker"]


def _event(reason: str, about: dict[str, Any], message: str, when: str) -> dict[str, Any]:
    meta = about["metadata"]
    return {
        "reason": reason,
        "type": "Warning",
        "message": message,
        "lastTimestamp": when,
        "involvedObject": {"kind": "Job", "name": meta["name"], "uid": meta.get("uid")},
    }


def _running(**observed: Any) -> Any:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    decision = derive(first, observed=_observed(**observed), plan=PLAN)
    condition = next(c for c in decision.status.conditions if c.type == "Running")
    return decision, condition


def test_pods_the_namespaces_pod_security_level_rejects_fail_the_running_condition() -> None:
    job = _batch_job()
    older = _event("FailedCreate", job, "Error creating: an older message", "2026-01-01T00:00:01Z")
    newer = _event("FailedCreate", job, PSA, "2026-01-01T00:00:05Z")
    decision, running = _running(attempt_job=job, pods=[], warnings=[newer, older])
    assert (running.status, running.reason) == ("False", "PodsRejected")
    assert "0/2 workers running" in running.message
    assert 'violates PodSecurity "restricted:latest"' in running.message
    assert "spec.template.securityContext" in running.message
    assert ("Warning", "PodsRejected", running.message) in decision.events
    assert decision.status.phase == "Planned"


def test_a_quota_rejection_says_to_free_or_raise_the_quota() -> None:
    job = _batch_job()
    quota = 'Error creating: pods "w" is forbidden: exceeded quota: gpus, requested: ...'
    _, running = _running(
        attempt_job=job, warnings=[_event("FailedCreate", job, quota, "2026-01-01T00:00:05Z")]
    )
    assert running.reason == "PodsRejected"
    assert "ResourceQuota" in running.message


def test_a_rejection_no_longer_counts_once_every_worker_exists() -> None:
    job = _batch_job()
    creating = {"containerStatuses": [{"name": "trainer", "state": {"waiting": {}}}]}
    pods = [_pending_pod(0, creating), _pending_pod(1, creating)]
    _, running = _running(
        attempt_job=job,
        pods=pods,
        warnings=[_event("FailedCreate", job, PSA, "2026-01-01T00:00:05Z")],
    )
    assert running.reason == "WorkersStarting"


def test_a_secret_the_kubelet_cannot_mount_is_named_in_its_words() -> None:
    pod = _pending_pod(0, {})
    pod["metadata"]["uid"] = "pod-uid-0"
    message = 'MountVolume.SetUp failed for volume "secret-hf-token" : secret "hf-token" not found'
    event = _event("FailedMount", pod, message, "2026-01-01T00:00:05Z")
    event["involvedObject"]["kind"] = "Pod"
    _, running = _running(attempt_job=_batch_job(), pods=[pod], warnings=[event])
    assert running.reason == "SecretNotFound"
    assert f"worker 0 (w-0) cannot mount a Secret: {message}" in running.message
    assert "create the Secret" in running.message


def test_workers_of_one_attempt_prefer_distinct_nodes_unless_the_template_places_them() -> None:
    manifest = children.worker_job(PRETRAIN, JOB, attempt=2, spec=_spec(JOB), image="t:1")
    [term] = manifest["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "trainkube.io/job": "tiny-pretrain",
        "trainkube.io/kind": "LLMTrainingJob",
        "trainkube.io/attempt": "2",
    }
    own: dict[str, Any] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    body, job = _with_template(affinity=own)
    placed = children.worker_job(body, job, attempt=1, spec=_spec(job), image="t:1")
    assert placed["spec"]["template"]["spec"]["affinity"] == own
