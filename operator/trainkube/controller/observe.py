"""Observe: everything one reconcile needs to decide, read from the caches.

The job and the jobs it builds on, its plan (with any out-of-memory escalation), the run config
its next attempt would get, the latest attempt's batch Job and pods, and the trainer's report.
Only what no cache holds is read from the apiserver, and only while a job waits to start: that
the claims its pods mount exist. Secrets are never read (the operator may not): a missing Secret
or key shows in the kubelet's FailedMount warning about a worker, which the cache holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainkube import timestamps
from trainkube.api import KINDS
from trainkube.api.evaljob import EvalJob, EvalJobStatus
from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.model import ModelSource
from trainkube.api.refs import JobOutputRef
from trainkube.api.status import ConditionType, JobStatus, Output, PlanEscalation, Reason
from trainkube.controller import naming, outputs, runspec, workers
from trainkube.controller.cache import Cache, attempt_of
from trainkube.controller.clients import Clients
from trainkube.controller.conditions import is_true
from trainkube.controller.report import of_attempt, parse_report
from trainkube.controller.step import Observed
from trainkube.planner.escalate import escalate
from trainkube.planner.from_spec import request_for
from trainkube.planner.memory import Device
from trainkube.planner.plan import Overrides, Plan, PlanError, PlanRequest, plan

MODELS = {kind.kind: kind for kind in KINDS}
ROLLBACK_ANNOTATION = "trainkube.io/rollback-to"


class InputFailed(Exception):  # noqa: N818 - a state of another job
    """A job this one depends on failed or does not exist."""


@dataclass
class Seen:
    """The job as observed: its model, status, plan, next run config and the observations."""

    body: dict[str, Any]
    job: runspec.Job
    current: JobStatus
    request: PlanRequest | None
    plan: Plan | None
    plan_error: str | None
    waiting_for: str | None
    spec: runspec.WorkerSpec | None
    observed: Observed


def parse(body: dict[str, Any]) -> tuple[runspec.Job, JobStatus]:
    job = MODELS[body["kind"]].model.model_validate(dict(body))
    assert isinstance(job, LLMTrainingJob | FineTuneJob | EvalJob)
    status_model = EvalJobStatus if isinstance(job, EvalJob) else JobStatus
    return job, status_model.model_validate(body.get("status") or {})


def _resolvers(cache: Cache, clients: Clients, namespace: str) -> tuple[Any, Any]:
    """Look-ups of other jobs, from the cache: their model source (the planner needs its
    shape) and their output (the run config mounts it). A job that is gone is looked up in its
    output record (outputs.py), read from the apiserver: only consumers of deleted jobs do."""

    def job_of(ref: JobOutputRef) -> dict[str, Any] | None:
        return cache.job(ref.kind.value, namespace, ref.name)

    def record_of(ref: JobOutputRef) -> outputs.Record | None:
        name = naming.output_record_name(ref.kind.value, ref.name)
        try:
            found = clients.core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return None
        return outputs.parse(found.data)

    def source(ref: JobOutputRef) -> ModelSource | None:
        found = job_of(ref)
        if found is None:
            kept = record_of(ref)
            return kept.source if kept else None
        parsed = MODELS[ref.kind.value].model.model_validate(found)
        if isinstance(parsed, LLMTrainingJob):
            return parsed.spec.model
        if isinstance(parsed, FineTuneJob):
            return parsed.spec.base_model
        return None

    def kept_output(ref: JobOutputRef) -> Output:
        kept = record_of(ref)
        if kept is None:  # GitOps may create it a moment later: wait, and say so
            raise runspec.InputNotReady(
                f"waiting for {ref.kind} {ref.name!r}, which does not exist (yet) in namespace "
                f"{namespace}"
            )
        for claim in kept.claims():
            try:
                clients.core.read_namespaced_persistent_volume_claim(claim, namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
                raise InputFailed(
                    f"{ref.kind} {ref.name!r} was deleted and the claim {claim!r} that held its "
                    "output is gone too (createVolume.whenJobDeleted: Delete, or deleted by "
                    "hand): point fromJob at another job, or the model at a volume that has it"
                ) from None
        return kept.output

    def output(ref: JobOutputRef) -> Output | None:
        found = job_of(ref)
        if found is None:
            return kept_output(ref)
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


def _divergence(report: dict[str, Any], attempt: int) -> dict[str, Any] | None:
    """The trainer's divergence report, if it belongs to attempt `attempt`."""
    result = report.get("result.json") or {}
    if result.get("outcome") != "diverged" or result.get("attempt") != attempt:
        return None
    divergence: dict[str, Any] = result.get("divergence") or {}
    return divergence


def _created_claim(job: runspec.Job) -> str | None:
    """The claim the operator creates itself (not missing even before it exists)."""
    checkpoints = getattr(job.spec, "checkpoints", None)
    if checkpoints is not None and checkpoints.create_volume is not None:
        return naming.checkpoint_claim_name(job.kind, str(job.metadata["name"]))
    return None


def missing_inputs(
    clients: Clients, namespace: str, spec: runspec.WorkerSpec, created: str | None
) -> tuple[Reason, str] | None:
    """The first claim the pods need that does not exist, as (reason, message)."""
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


def _undeleted_attempts(
    jobs: Iterable[dict[str, Any]], pods: list[dict[str, Any]]
) -> tuple[int, ...]:
    """Attempts with a batch Job or pod not yet being deleted (one deletion is enough)."""
    return tuple(
        sorted(
            {
                attempt_of(o)
                for o in (*jobs, *pods)
                if not o["metadata"].get("deletionTimestamp") and attempt_of(o)
            }
        )
    )


def observe(body: dict[str, Any], *, cache: Cache, clients: Clients) -> Seen:
    job, current = parse(body)
    kind, name, namespace = body["kind"], body["metadata"]["name"], body["metadata"]["namespace"]
    training = not isinstance(job, EvalJob)
    source, output = _resolvers(cache, clients, namespace)
    request, chosen, plan_error, waiting = _plan_for(job, current, source)

    last = current.attempts[-1] if current.attempts else None
    number = last.number if last else 0
    running = last is not None and last.end_time is None
    attempt_jobs = cache.attempt_jobs(namespace, kind, name)
    attempt_job = attempt_jobs.get(number)
    all_pods = cache.pods(namespace, kind, name)
    pods = [p for p in all_pods if attempt_of(p) == number]
    report_map = cache.report(namespace, kind, name)
    report = of_attempt(parse_report((report_map or {}).get("data")), number)

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
    annotations = body["metadata"].get("annotations") or {}
    observed = Observed(
        generation=int(body["metadata"].get("generation") or 1),
        nodes=job.spec.resources.nodes,
        suspend=job.spec.suspend,
        attempt_job=attempt_job,
        pods=pods,
        warnings=[
            w
            for child in ([attempt_job] if attempt_job else []) + pods
            for w in cache.warnings(child)
        ],
        existing_attempts=_undeleted_attempts(attempt_jobs.values(), all_pods),
        pods_alive=sum(1 for p in all_pods if workers.alive(p)),
        report=report,
        output=spec.output if spec else None,
        now=timestamps.now(),
        deadline_seconds=job.spec.active_deadline_seconds,
        missing=missing_inputs(clients, namespace, spec, _created_claim(job))
        if spec is not None and not running and not job.spec.suspend
        else None,
        failure_policy=job.spec.failure_policy if not isinstance(job, EvalJob) else None,
        rollback_policy=job.spec.rollback if not isinstance(job, EvalJob) else None,
        divergence=_divergence(report, number),
        # Escalating walks the planner's ladder: only worth it when an attempt just failed.
        escalation=_escalation(request, chosen)
        if training
        and running
        and request is not None
        and workers.attempt_failed(attempt_job, pods)
        else None,
        base_lr=job.spec.training.learning_rate if not isinstance(job, EvalJob) else 0.0,
        rollback_request=annotations.get(ROLLBACK_ANNOTATION) if training else None,
    )
    return Seen(
        body=body,
        job=job,
        current=current,
        request=request,
        plan=chosen,
        plan_error=plan_error,
        waiting_for=waiting,
        spec=spec,
        observed=observed,
    )
