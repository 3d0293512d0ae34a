"""One reconcile of one job: observe (from the caches), derive (pure), act (here, the only place
that writes).

Acting follows one order, so that an operator killed at any line leaves nothing the next
reconcile cannot finish: first the status, with the resourceVersion it was derived from (a
conflict means the job changed meanwhile: nothing is done, the job is looked at again); then
the attempt Jobs to delete; then the attempt to create, and only once no pod of another attempt
may still run. Creating is idempotent (server-side apply of deterministic names), so an intent
recorded in status and not yet carried out is simply carried out by the next reconcile.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from trainkube import timestamps
from trainkube.api import GROUP, VERSION
from trainkube.api.evaljob import EvalJob
from trainkube.api.status import ConditionType, JobStatus, Phase, Reason
from trainkube.controller import children, interval, naming, outputs, runspec, workers
from trainkube.controller.cache import Cache
from trainkube.controller.clients import FIELD_MANAGER, Clients
from trainkube.controller.conditions import Conditions, is_finished
from trainkube.controller.events import Recorder, post_event
from trainkube.controller.hooks import CrashPoints
from trainkube.controller.observe import MODELS, Seen, observe, parse, with_escalation
from trainkube.controller.report import eval_results
from trainkube.controller.status import derive, finished_at
from trainkube.controller.statuswrite import worth_writing
from trainkube.controller.step import Decision
from trainkube.planner.plan import plan
from trainkube.runconfig import Fault

FAULT_ANNOTATION = f"{GROUP}/fault"
REJECTED_RETRY_SECONDS = 15.0  # a child refused for a reason that may pass (quota, admission)
WAIT_FOR_PODS_SECONDS = 1.0  # looked at again this soon while an old attempt's pods stop
CONFLICT_RETRY_SECONDS = 0.2  # the watch brings the newer job meanwhile (and enqueues it)
log = logging.getLogger("trainkube")


class NotLeader(Exception):  # noqa: N818 - a state, not a failure
    """This replica lost the lease: it must not write."""


@dataclass
class Result:
    requeue_after: float | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Context:
    """What every reconcile shares: clients, caches, whether this replica may act."""

    clients: Clients
    cache: Cache
    is_leader: Callable[[], bool] = lambda: True
    crash: CrashPoints = field(default_factory=CrashPoints)
    events: Recorder | None = None  # None: Events are posted at once, by the reconcile

    def guard(self) -> None:
        if not self.is_leader():
            raise NotLeader()


def _fault(body: dict[str, Any], attempt: int, *, enabled: bool) -> Fault | None:
    """A deliberate fault for tests and demos (annotation trainkube.io/fault, JSON), first
    attempt only, and only where the operator runs with its test hooks enabled."""
    text = (body["metadata"].get("annotations") or {}).get(FAULT_ANNOTATION)
    if not text or attempt != 1:
        return None
    if not enabled:
        log.warning("ignoring %s: test hooks are off in this operator", FAULT_ANNOTATION)
        return None
    try:
        return Fault.model_validate(json.loads(text))
    except ValueError:
        log.warning("ignoring unreadable %s annotation", FAULT_ANNOTATION)
        return None


def _write_status(ctx: Context, body: dict[str, Any], status: JobStatus) -> bool:
    """Replace the job's status, conditional on the resourceVersion it was derived from;
    False when the job changed (or went) meanwhile."""
    ctx.guard()
    meta = body["metadata"]
    plural = MODELS[body["kind"]].plural
    new = {**body, "status": status.to_wire()}
    try:
        written = ctx.clients.custom.replace_namespaced_custom_object_status(
            GROUP,
            VERSION,
            meta["namespace"],
            plural,
            meta["name"],
            new,
            field_manager=FIELD_MANAGER,
        )
    except ApiException as error:
        if error.status in (404, 409):
            return False
        raise
    ctx.cache.put_job(cast(dict[str, Any], written))
    return True


def _delete_attempt(ctx: Context, body: dict[str, Any], number: int) -> None:
    """Delete an attempt's batch Job and its pods: the pods at once, not when the garbage
    collector gets to them (minutes behind on a busy cluster), since the next attempt waits
    for them."""
    ctx.guard()
    meta = body["metadata"]
    kind, name, namespace = body["kind"], meta["name"], meta["namespace"]
    try:
        ctx.clients.batch.delete_namespaced_job(
            naming.attempt_job_name(kind, name, number),
            namespace,
            propagation_policy="Background",
        )
    except ApiException as error:
        if error.status != 404:
            raise
    selector = {**naming.selector(kind, name), naming.ATTEMPT_LABEL: str(number)}
    ctx.clients.core.delete_collection_namespaced_pod(
        namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
    )


def _image(clients: Clients, job: runspec.Job) -> str:
    if job.spec.template.image:
        return job.spec.template.image
    return clients.images["gpu" if job.spec.resources.gpus_per_node else "cpu"]


def _mtbf(seen: Seen, status: JobStatus) -> float | None:
    """For interval auto: the MTBF the next attempt plans its checkpoints for."""
    config = seen.spec.run_config.checkpoints if seen.spec else None
    if config is None or config.auto_mtbf_seconds is None:
        return None
    return interval.refined_seconds(config.auto_mtbf_seconds, status, timestamps.now())


def _rollbacks_left(seen: Seen, status: JobStatus) -> int:
    """Of the spec's maxRollbacks, those no rollback has used yet."""
    policy = seen.observed.rollback_policy
    used = status.recovery.rollbacks if status.recovery else 0
    return max(0, policy.max_rollbacks - used) if policy is not None else 0


def _attempt_spec(
    seen: Seen, decision: Decision, number: int, *, faults: bool
) -> runspec.WorkerSpec:
    """The run config of attempt `number`, from what its record in status says it inherits."""
    assert seen.spec is not None
    status = decision.status
    record = next(a for a in status.attempts if a.number == number)
    state = status.recovery
    chosen = seen.plan
    if seen.request is not None and state is not None and state.escalation is not None:
        chosen = plan(with_escalation(seen.request, status))
    attempt = runspec.Attempt(
        number=number,
        lr_factor=state.learning_rate_factor if state else 1.0,
        skip_batches=tuple((r.start, r.end) for r in state.skip_batches) if state else (),
        resume_step=record.resumed_from_step or None,
        fresh_start=record.resumed_from_step == 0,
        rollback_to=record.rollback_to,
        mtbf_seconds=_mtbf(seen, status),
        rollbacks_left=_rollbacks_left(seen, status),
    )
    fault = _fault(seen.body, number, enabled=faults)
    return runspec.for_attempt(seen.spec, attempt, chosen, fault)


def _create_attempt(ctx: Context, seen: Seen, decision: Decision, number: int) -> None:
    body, job = seen.body, seen.job
    spec = _attempt_spec(seen, decision, number, faults=ctx.crash.enabled)
    manifests = [
        *([children.service(body)] if children.needs_service(job.spec.resources) else []),
        children.report_config_map(body),
        *children.worker_rbac(body, job.spec.template),
        children.run_config_map(body, attempt=number, spec=spec, resources=job.spec.resources),
    ]
    claim = children.checkpoint_claim(body, job)
    if claim is not None:
        manifests.append(claim)
    for manifest in manifests:
        ctx.guard()
        ctx.clients.apply(manifest)
    ctx.guard()
    created = ctx.clients.apply(
        children.worker_job(body, job, attempt=number, spec=spec, image=_image(ctx.clients, job))
    )
    ctx.cache.put_batch_job(created)


def _pods_alive(ctx: Context, body: dict[str, Any]) -> bool:
    """Whether a pod of the job may still run. Called before an attempt is created, whose Job
    the cache does not hold: every such pod is another attempt's, or that of an earlier Job of
    this attempt deleted before its uid was written (statuswrite)."""
    meta = body["metadata"]
    pods = ctx.cache.pods(meta["namespace"], body["kind"], meta["name"])
    return any(workers.alive(p) for p in pods)


def act(ctx: Context, seen: Seen, decision: Decision) -> Result:
    """Carry out a decision: status first, then deletions, then the new attempt."""
    body = seen.body
    changed = worth_writing(seen.current, decision.status)
    create = decision.create_attempt
    # An attempt waits while a pod of another may still run (looked at again shortly).
    deferred = create is not None and _pods_alive(ctx, body)
    acting = bool(decision.delete_attempts) or (create is not None and not deferred)
    if changed:
        _record_output(ctx, seen.body, seen.job, decision.status)
    # Also when only acting: the conditional write proves the job was not changed meanwhile
    # (a suspend landing during this reconcile must not be undone by acting on older spec).
    if (changed or acting) and not _write_status(ctx, body, decision.status):
        return Result(requeue_after=CONFLICT_RETRY_SECONDS)
    ctx.crash.reached("status-written")
    for number in decision.delete_attempts:
        _delete_attempt(ctx, body, number)
        ctx.crash.reached("attempt-deleted")
    requeue = decision.requeue_after
    if create is not None and seen.spec is not None:
        if deferred:
            requeue = min(requeue or WAIT_FOR_PODS_SECONDS, WAIT_FOR_PODS_SECONDS)
        else:
            try:
                _create_attempt(ctx, seen, decision, create)
            except ApiException as error:
                if error.status not in (400, 403, 422):
                    raise
                rejected = _rejected(ctx, body, decision, error)
                rejected.events = [*(decision.events if changed else []), *rejected.events]
                return rejected
            ctx.crash.reached("attempt-created")
    return Result(requeue_after=requeue, events=decision.events if changed else [])


def _post(ctx: Context, body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
    if ctx.events is not None:
        ctx.events.record(body, events)
        return
    for kind, reason, message in events:
        post_event(ctx.clients, body, kind=kind, reason=reason, message=message)


def _rejected(ctx: Context, body: dict[str, Any], decision: Decision, error: Any) -> Result:
    """The apiserver refused a child: say so in a condition. Invalid (400, 422) will not pass
    by itself: the job fails and names the child and the apiserver's message; forbidden (403:
    a quota, an admission policy) may: the job waits and tries again."""
    meta = body["metadata"]
    detail = _api_message(error)
    message = f"the apiserver refused a child of attempt {decision.create_attempt}: {detail}"
    latest = ctx.cache.job(body["kind"], meta["namespace"], meta["name"]) or body
    _, current = parse(latest)
    conds = Conditions(list(current.conditions), timestamps.now(), int(meta.get("generation") or 1))
    invalid = error.status != 403
    conds.mark(ConditionType.RUNNING, False, Reason.CHILD_REJECTED, message, warn=True)
    update: dict[str, Any] = {"conditions": conds.items}
    if invalid:
        conds.mark(ConditionType.FAILED, True, Reason.CHILD_REJECTED, message, warn=True)
        update.update(conditions=conds.items, phase=Phase.FAILED, completion_time=conds.now)
        attempts = list(current.attempts)
        if attempts and attempts[-1].end_time is None:
            ended = {"end_time": conds.now, "reason": Reason.CHILD_REJECTED, "message": message}
            attempts[-1] = attempts[-1].model_copy(update=ended)
        update["attempts"] = attempts
    if not _write_status(ctx, latest, current.model_copy(update=update)):
        return Result(requeue_after=CONFLICT_RETRY_SECONDS)
    return Result(requeue_after=None if invalid else REJECTED_RETRY_SECONDS, events=conds.events)


def _api_message(error: Any) -> str:
    """The apiserver's own message from an ApiException (its Status body), else its reason."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


def _record_output(ctx: Context, body: dict[str, Any], job: runspec.Job, status: JobStatus) -> None:
    """Before a status says Succeeded with an output, or before a succeeded job is deleted,
    record where the output is in an object that outlives the job (outputs.py)."""
    if status.phase != Phase.SUCCEEDED or status.output is None:
        return
    if not (status.output.model_path or status.output.adapter_path):
        return
    ctx.guard()
    ctx.clients.apply(outputs.record(body, job, status.output))
    ctx.crash.reached("output-recorded")


def _finished(ctx: Context, body: dict[str, Any], job: runspec.Job, current: JobStatus) -> Result:
    """A finished job keeps its status; only observedGeneration follows spec edits, and
    ttlSecondsAfterFinished deletes it (the job, never what it wrote to volumes)."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    if current.observed_generation != generation:
        _write_status(ctx, body, current.model_copy(update={"observed_generation": generation}))
    ttl, finished = job.spec.ttl_seconds_after_finished, finished_at(current)
    if ttl is None or finished is None:
        return Result()
    left = finished + ttl - time.time()
    if left > 0:
        return Result(requeue_after=left)
    _record_output(ctx, body, job, current)  # a job that succeeded before records existed
    ctx.guard()
    plural = MODELS[body["kind"]].plural
    try:
        ctx.clients.custom.delete_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], plural, meta["name"]
        )
    except ApiException as error:
        if error.status != 404:
            raise
    return Result()


def reconcile(body: dict[str, Any], ctx: Context) -> Result:
    """Reconcile one job (as the cache has it); post the Events of what changed."""
    job, current = parse(body)
    if is_finished(current):
        return _finished(ctx, body, job, current)
    seen = observe(body, cache=ctx.cache, clients=ctx.clients)
    decision = derive(
        current,
        observed=seen.observed,
        plan=seen.plan,
        plan_error=seen.plan_error,
        waiting_for=seen.waiting_for,
    )
    if isinstance(job, EvalJob) and (results := eval_results(seen.observed.report)):
        decision.status = decision.status.model_copy(update=results)
    result = act(ctx, seen, decision)
    _post(ctx, body, result.events)
    if is_finished(decision.status) and result.requeue_after is None:
        result.requeue_after = 0  # TTL and observedGeneration are handled as finished
    return result
