"""One reconcile of one job: read the job and its children, decide (pure), write.

Writes go through one field manager with server-side apply; the status is patched only when it
changed. Idempotent: killed at any point and run again, it finds what it created (children
have deterministic names) and neither duplicates nor loses anything.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from trainkube import timestamps
from trainkube.api import GROUP, KINDS, VERSION
from trainkube.api.base import ApiModel
from trainkube.api.common import JobOutputRef, ModelSource
from trainkube.api.evaljob import EvalJob, EvalJobStatus
from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.status import ConditionType, JobStatus, Output, PlanEscalation, Reason
from trainkube.controller import children, naming, runspec
from trainkube.controller.status import (
    TERMINAL,
    Observed,
    attempt_failed,
    derive,
    eval_results,
    finished_at,
    is_true,
    parse_report,
)
from trainkube.planner.escalate import escalate
from trainkube.planner.from_spec import request_for
from trainkube.planner.memory import Device
from trainkube.planner.plan import Overrides, Plan, PlanError, PlanRequest, plan
from trainkube.runconfig import Fault

FIELD_MANAGER = "trainkube-operator"
MODELS = {kind.kind: kind for kind in KINDS}
DEFAULT_IMAGES = {
    "gpu": "ghcr.io/trainkube/trainer:0.1.0",
    "cpu": "ghcr.io/trainkube/trainer-cpu:0.1.0",
}
log = logging.getLogger("trainkube")


@dataclass
class Clients:
    """API clients made once per operator process."""

    api: client.ApiClient
    dynamic: DynamicClient
    core: client.CoreV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi
    images: dict[str, str]

    @classmethod
    def create(cls, api: client.ApiClient, images: dict[str, str] | None = None) -> Clients:
        return cls(
            api=api,
            dynamic=DynamicClient(api),  # type: ignore[no-untyped-call]
            core=client.CoreV1Api(api),
            batch=client.BatchV1Api(api),
            custom=client.CustomObjectsApi(api),
            images=images or DEFAULT_IMAGES,
        )

    def apply(self, manifest: dict[str, Any]) -> None:
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        resource.server_side_apply(
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )


def _get_job(clients: Clients, namespace: str, ref: JobOutputRef) -> dict[str, Any] | None:
    plural = MODELS[ref.kind.value].plural
    try:
        found = clients.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, ref.name
        )
        return cast(dict[str, Any], found)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


class InputFailed(Exception):  # noqa: N818 - a state of another job
    """A job this one depends on failed or does not exist."""


def _resolvers(clients: Clients, namespace: str) -> tuple[Any, Any]:
    """Look-ups of other jobs (shape for the planner, output for the run config); each job is
    read once per reconcile."""
    read: dict[JobOutputRef, dict[str, Any] | None] = {}

    def job_of(ref: JobOutputRef) -> dict[str, Any] | None:
        if ref not in read:
            read[ref] = _get_job(clients, namespace, ref)
        return read[ref]

    def source(ref: JobOutputRef) -> ModelSource | None:
        found = job_of(ref)
        if found is None:
            return None
        parsed = MODELS[ref.kind.value].model.model_validate(found)
        if isinstance(parsed, LLMTrainingJob):
            return parsed.spec.model
        if isinstance(parsed, FineTuneJob):
            return parsed.spec.base_model
        return None

    def output(ref: JobOutputRef) -> Output | None:
        found = job_of(ref)
        if found is None:  # GitOps may create it a moment later: wait, and say so
            raise runspec.InputNotReady(
                f"waiting for {ref.kind} {ref.name!r}, which does not exist (yet) in namespace "
                f"{namespace}"
            )
        status = JobStatus.model_validate(found.get("status") or {})
        if is_true(status, ConditionType.FAILED):
            raise InputFailed(f"{ref.kind} {ref.name!r} failed, so its output will never exist")
        if not is_true(status, ConditionType.SUCCEEDED):
            return None
        if status.output is None or not (status.output.model_path or status.output.adapter_path):
            raise InputFailed(
                f"{ref.kind} {ref.name!r} succeeded without saving a model: give it spec.output "
                "or a checkpoint volume, and run it again"
            )
        return status.output

    return source, output


def _items(response: Any) -> list[dict[str, Any]]:
    """Items of a list call made with _preload_content=False (plain dicts, no model objects)."""
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def _latest_attempt(clients: Clients, namespace: str, name: str) -> dict[str, Any] | None:
    selector = f"{naming.JOB_LABEL}={name},{naming.COMPONENT_LABEL}={children.WORKER}"
    jobs = _items(
        clients.batch.list_namespaced_job(
            namespace, label_selector=selector, _preload_content=False
        )
    )
    if not jobs:
        return None
    return max(jobs, key=lambda j: int(j["metadata"]["labels"].get(naming.ATTEMPT_LABEL, "0")))


def _pods(clients: Clients, namespace: str, job: dict[str, Any] | None) -> list[dict[str, Any]]:
    if job is None:
        return []
    selector = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
    return _items(
        clients.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
    )


def _report(clients: Clients, namespace: str, name: str) -> dict[str, Any]:
    try:
        found = clients.core.read_namespaced_config_map(naming.report_name(name), namespace)
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    return parse_report(found.data)


def _image(clients: Clients, job: runspec.Job) -> str:
    if job.spec.template.image:
        return job.spec.template.image
    return clients.images["gpu" if job.spec.resources.gpus_per_node else "cpu"]


def _create_attempt(
    clients: Clients, body: dict[str, Any], job: runspec.Job, number: int, spec: runspec.WorkerSpec
) -> None:
    manifests = [
        children.service(body),
        children.report_config_map(body),
        *children.worker_rbac(body),
        children.run_config_map(body, attempt=number, spec=spec, resources=job.spec.resources),
    ]
    claim = children.checkpoint_claim(body, job)
    if claim is not None:
        manifests.append(claim)
    manifests.append(
        children.worker_job(body, job, attempt=number, spec=spec, image=_image(clients, job))
    )
    for manifest in manifests:
        clients.apply(manifest)


def _missing(
    clients: Clients, namespace: str, spec: runspec.WorkerSpec, created: str | None
) -> Any:
    """The first Secret or claim the pods need that does not exist, as (reason, message)."""
    for secret, key in sorted(spec.secrets.items()):
        try:
            found = clients.core.read_namespaced_secret(secret, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return (
                Reason.SECRET_NOT_FOUND,
                f"Secret {secret!r} (key {key!r}) does not exist in namespace {namespace}: "
                "create it; the job starts when it exists",
            )
        if key not in (found.data or {}):
            return (Reason.SECRET_NOT_FOUND, f"Secret {secret!r} has no key {key!r}: add it")
    for claim in sorted({c.claim for c in spec.claims} - {created}):
        try:
            clients.core.read_namespaced_persistent_volume_claim(claim, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return (
                Reason.VOLUME_NOT_FOUND,
                f"PersistentVolumeClaim {claim!r} does not exist in namespace {namespace}: "
                "create it; the job starts when it exists",
            )
    return None


def _created_claim(job: runspec.Job, name: str) -> str | None:
    """The claim the operator creates itself (not missing even before it exists)."""
    checkpoints = getattr(job.spec, "checkpoints", None)
    if checkpoints is not None and checkpoints.create_volume is not None:
        return naming.checkpoint_claim_name(name)
    return None


def with_escalation(request: PlanRequest, status: JobStatus) -> PlanRequest:
    """The request with the plan settings earlier out-of-memory failures forced."""
    found = status.recovery.escalation if status.recovery else None
    if found is None:
        return request
    return replace(
        request,
        overrides=Overrides(
            zero_stage=found.zero_stage,
            offload_optimizer=Device(found.offload_optimizer) if found.offload_optimizer else None,
            offload_parameters=Device(found.offload_parameters)
            if found.offload_parameters
            else None,
            micro_batch_size=found.micro_batch_size,
            activation_checkpointing=found.activation_checkpointing,
        ),
    )


def _escalation(request: PlanRequest, current: Plan | None) -> tuple[PlanEscalation, str] | None:
    if current is None:
        return None
    try:
        found = escalate(request, current)
    except PlanError:
        return None
    if found is None:
        return None
    _, overrides, what = found
    return (
        PlanEscalation(
            zero_stage=overrides.zero_stage,
            offload_optimizer=overrides.offload_optimizer.value
            if overrides.offload_optimizer
            else None,
            offload_parameters=overrides.offload_parameters.value
            if overrides.offload_parameters
            else None,
            micro_batch_size=overrides.micro_batch_size,
            activation_checkpointing=overrides.activation_checkpointing,
        ),
        what,
    )


def _divergence(report: dict[str, Any], attempt: int) -> dict[str, Any] | None:
    """The trainer's divergence report, if it belongs to attempt `attempt`."""
    result = report.get("result.json") or {}
    if result.get("outcome") != "diverged" or result.get("attempt") != attempt:
        return None
    divergence: dict[str, Any] = result.get("divergence") or {}
    return divergence


FAULT_ANNOTATION = f"{GROUP}/fault"
ROLLBACK_ANNOTATION = f"{GROUP}/rollback-to"


def _fault(body: dict[str, Any], attempt: int) -> Fault | None:
    """A deliberate fault for tests and demos (annotation trainkube.io/fault, JSON), first
    attempt only."""
    text = (body["metadata"].get("annotations") or {}).get(FAULT_ANNOTATION)
    if not text or attempt != 1:
        return None
    try:
        return Fault.model_validate(json.loads(text))
    except ValueError:
        log.warning("ignoring unreadable %s annotation", FAULT_ANNOTATION)
        return None


def _expired(body: dict[str, Any], job: runspec.Job, current: JobStatus) -> bool:
    ttl = job.spec.ttl_seconds_after_finished
    finished = finished_at(current)
    return ttl is not None and finished is not None and time.time() - finished > ttl


def _start_attempt(
    clients: Clients,
    body: dict[str, Any],
    job: runspec.Job,
    decision: Any,
    spec: runspec.WorkerSpec,
    request: PlanRequest | None,
    chosen: Plan | None,
    output: Any,
) -> None:
    """Create the next attempt; after failures and rollbacks, with what recovery decided."""
    number = decision.create_attempt
    state = decision.status.recovery
    if number > 1 and state is not None and not isinstance(job, EvalJob):
        spec = runspec.worker_spec(
            job,
            namespace=body["metadata"]["namespace"],
            plan=plan(with_escalation(request, decision.status)) if request else chosen,
            attempt=runspec.Attempt(
                number=number,
                lr_factor=state.learning_rate_factor,
                skip_batches=tuple((r.start, r.end) for r in state.skip_batches),
                resume_step=state.resume_step,
                fresh_start=state.fresh_start,
            ),
            resolve=output,
        )
    spec.run_config = spec.run_config.model_copy(
        update={"attempt": number, "fault": _fault(body, number)}
    )
    if number > 1:
        # Workers of the failed attempt that still run (a collective waiting on a lost peer)
        # must stop before the new gang starts.
        previous = naming.attempt_job_name(body["metadata"]["name"], number - 1)
        try:
            clients.batch.delete_namespaced_job(
                previous, body["metadata"]["namespace"], propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise
    _create_attempt(clients, body, job, number, spec)


def _plan_for(
    job: runspec.Job, current: JobStatus, source: Any
) -> tuple[PlanRequest | None, Plan | None, str | None, str | None]:
    """The plan request and plan of a training job (with any OOM escalation), or why there is
    none: (request, plan, error that fails the job, input it waits for)."""
    if isinstance(job, EvalJob):
        return None, None, None, None
    try:
        request = with_escalation(request_for(job, source), current)
        return request, plan(request), None, None
    except PlanError as error:
        if "was not found" in str(error):
            return None, None, None, str(error)
        return None, None, str(error), None


def _patch_status(
    clients: Clients, plural: str, namespace: str, name: str, status: JobStatus, generation: int
) -> None:
    body = status.model_copy(update={"observed_generation": generation}).to_wire()
    clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": body}
    )


def reconcile(body: dict[str, Any], clients: Clients) -> list[tuple[str, str, str]]:
    """Reconcile one job; returns the Events to post (type, reason, message)."""
    kind = MODELS[body["kind"]]
    job: ApiModel = kind.model.model_validate(dict(body))
    assert isinstance(job, LLMTrainingJob | FineTuneJob | EvalJob)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    status_model = EvalJobStatus if isinstance(job, EvalJob) else JobStatus
    current = status_model.model_validate(body.get("status") or {})
    if _expired(body, job, current):
        clients.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name)
        return []
    generation = int(body["metadata"].get("generation") or 1)
    if any(is_true(current, done) for done in TERMINAL):
        # A finished job keeps its status (derive would only move observedGeneration): no
        # planning, look-ups or listings on every sweep.
        if current.observed_generation != generation:
            _patch_status(clients, kind.plural, namespace, name, current, generation)
        return []
    source, output = _resolvers(clients, namespace)

    request, chosen, plan_error, waiting = _plan_for(job, current, source)
    attempt_job = _latest_attempt(clients, namespace, name)
    number = int(attempt_job["metadata"]["labels"][naming.ATTEMPT_LABEL]) if attempt_job else 0
    spec = None
    if plan_error is None and waiting is None:
        try:
            spec = runspec.worker_spec(
                job,
                namespace=namespace,
                plan=chosen,
                attempt=runspec.Attempt(number=number + 1),
                resolve=output,
            )
        except runspec.InputNotReady as error:
            waiting = str(error)
        except InputFailed as error:
            plan_error = str(error)
    pods = _pods(clients, namespace, attempt_job)
    report = _report(clients, namespace, name)
    training = not isinstance(job, EvalJob)
    observed = Observed(
        generation=generation,
        nodes=job.spec.resources.nodes,
        suspend=job.spec.suspend,
        attempt_job=attempt_job,
        pods=pods,
        report=report,
        output=spec.output if spec else None,
        now=timestamps.now(),
        deadline_seconds=job.spec.active_deadline_seconds,
        missing=_missing(clients, namespace, spec, _created_claim(job, name))
        if spec is not None and attempt_job is None
        else None,
        failure_policy=job.spec.failure_policy if not isinstance(job, EvalJob) else None,
        rollback_policy=job.spec.rollback if not isinstance(job, EvalJob) else None,
        divergence=_divergence(report, number),
        # Escalating walks the planner's ladder: only worth it when an attempt just failed.
        escalation=_escalation(request, chosen)
        if training and request is not None and attempt_failed(attempt_job, pods)
        else None,
        base_lr=job.spec.training.learning_rate if not isinstance(job, EvalJob) else 0.0,
        rollback_request=(body["metadata"].get("annotations") or {}).get(ROLLBACK_ANNOTATION)
        if training
        else None,
    )
    decision = derive(
        current, observed=observed, plan=chosen, plan_error=plan_error, waiting_for=waiting
    )
    if isinstance(job, EvalJob) and (results := eval_results(observed.report)):
        decision.status = decision.status.model_copy(update=results)
    if decision.create_attempt is not None and spec is not None:
        _start_attempt(clients, body, job, decision, spec, request, chosen, output)
    if decision.delete_attempt and attempt_job is not None:
        clients.batch.delete_namespaced_job(
            attempt_job["metadata"]["name"], namespace, propagation_policy="Background"
        )
    if decision.status.to_wire() != current.to_wire():
        _patch_status(clients, kind.plural, namespace, name, decision.status, generation)
    return decision.events
