"""What an attempt's batch Job and pods say: finished, failed (and why, from the exit code the
trainer chose), how many workers run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainkube import timestamps
from trainkube.api.status import Reason
from trainkube.exitcodes import ExitCode

ENDED = ("Succeeded", "Failed")
_BY_EXIT_CODE = {
    ExitCode.DIVERGED: Reason.DIVERGED,
    ExitCode.OUT_OF_MEMORY: Reason.OUT_OF_MEMORY,
    ExitCode.GATES_FAILED: Reason.GATES_FAILED,
    ExitCode.INVALID_CONFIG: Reason.CONFIGURATION_ERROR,
}
# The batch Job's podFailurePolicy fails it at once when a worker gets this condition (eviction,
# preemption, a node that went away): its Failed condition then says so even after the pod is
# gone.
DISRUPTION = "DisruptionTarget"


def job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def phase(pod: dict[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def alive(pod: dict[str, Any]) -> bool:
    """A pod whose containers may still run (not Succeeded or Failed)."""
    return phase(pod) not in ENDED


def completed(job: dict[str, Any] | None, pods: list[dict[str, Any]], nodes: int) -> bool:
    """Whether the attempt finished: its Job says Complete, or every completion index has a
    Succeeded pod (the Job controller, which syncs at most once a second, says so later)."""
    if job_condition(job, "Complete"):
        return True
    done = {
        (p["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
        for p in pods
        if phase(p) == "Succeeded"
    }
    return done >= {str(i) for i in range(nodes)}


def started_at(pods: list[dict[str, Any]]) -> str | None:
    """When the last of the workers' containers started running (RFC 3339), if they run."""
    times = [
        started
        for pod in pods
        for state in (pod.get("status") or {}).get("containerStatuses") or []
        if (started := ((state.get("state") or {}).get("running") or {}).get("startedAt"))
    ]
    return max(times, key=timestamps.epoch) if times else None


def attempt_failed(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """Whether an attempt's batch Job failed, or any of its workers did or is being disrupted
    (evicted, preempted: it will not come back, and the gang cannot go on without it)."""
    return (
        bool(job_condition(job, "Failed"))
        or any(phase(p) == "Failed" for p in pods)
        or disruption(None, pods) is not None
    )


def disruption(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> str | None:
    """What disrupted a worker (evicted, preempted, lost with its node), if anything did: from
    the pod's DisruptionTarget condition, or from the batch Job's Failed condition when the
    pod is already gone."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == DISRUPTION and cond.get("status") == "True":
                why = cond.get("reason") or DISRUPTION
                detail = (cond.get("message") or "").strip()
                return f"worker {_index(pod)} ({pod['metadata']['name']}) was disrupted: {why}" + (
                    f": {detail[:300]}" if detail else ""
                )
    failed = job_condition(job, "Failed")
    if (
        failed
        and failed.get("reason") == "PodFailurePolicy"
        and DISRUPTION in (failed.get("message") or "")
    ):
        return f"a worker was disrupted: {failed['message'][:300]}"
    return None


def failure(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> tuple[Reason, str]:
    """Why an attempt failed: a disruption if a worker suffered one (the others then fail
    too, for want of it), else the first worker that exited non-zero."""
    disrupted = disruption(job, pods)
    if disrupted is not None:
        return Reason.DISRUPTED, disrupted
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for state in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (state.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                code, why = terminated.get("exitCode"), terminated.get("reason") or "Error"
                index = (pod["metadata"].get("annotations") or {}).get(
                    "batch.kubernetes.io/job-completion-index", "?"
                )
                reason = _BY_EXIT_CODE.get(code, Reason.WORKER_FAILED)
                if why == "OOMKilled":
                    reason = Reason.OUT_OF_MEMORY
                detail = terminated.get("message") or ""
                text = f"worker {index} ({pod['metadata']['name']}) exited with code {code} ({why})"
                return reason, text + (f": {detail.strip()[:500]}" if detail else "")
    return Reason.WORKER_FAILED, "a worker failed"


# What a kubelet says while a container cannot start (`state.waiting.reason`): the image cannot
# be had, or the container cannot be made. Transient reasons (ContainerCreating,
# PodInitializing) are not here.
_IMAGE_PROBLEMS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "ImageInspectError",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
_START_PROBLEMS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreStartHookError"}
)


def _index(pod: dict[str, Any]) -> str:
    annotations = pod["metadata"].get("annotations") or {}
    return str(annotations.get("batch.kubernetes.io/job-completion-index", "?"))


def blocked(
    pods: list[dict[str, Any]], warnings: Sequence[dict[str, Any]] = (), nodes: int = 0
) -> tuple[Reason, str] | None:
    """Why workers of an attempt cannot start, as the scheduler, kubelet or Job controller
    says, or None. `warnings` are the Warning events about the attempt's batch Job and pods.

    The first blocked worker by name speaks for all: an image that is missing or a pod that fits
    no node is usually the same for every worker of one attempt.
    """
    return _pod_blocked(pods) or _not_mounted(pods, warnings) or _not_created(pods, warnings, nodes)


def _latest(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def _not_mounted(
    pods: list[dict[str, Any]], warnings: Sequence[dict[str, Any]]
) -> tuple[Reason, str] | None:
    """A pending worker whose volumes the kubelet cannot mount (FailedMount): a missing Secret
    or key, said in the kubelet's words, which name the Secret and key but hold no value."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if phase(pod) != "Pending":
            continue
        uid = pod["metadata"].get("uid")
        found = [
            w
            for w in warnings
            if w.get("reason") == "FailedMount"
            and (w.get("involvedObject") or {}).get("uid") == uid
        ]
        if not found:
            continue
        detail = (_latest(found).get("message") or "").strip()[:500]
        who = f"worker {_index(pod)} ({pod['metadata']['name']})"
        if "secret" in detail.lower():
            return (
                Reason.SECRET_NOT_FOUND,
                f"{who} cannot mount a Secret: {detail}: create the Secret (or add the key) "
                "that the job's spec names; the workers start once it exists",
            )
        return Reason.CONTAINER_CANNOT_START, f"{who} cannot mount a volume: {detail}"
    return None


def _not_created(
    pods: list[dict[str, Any]], warnings: Sequence[dict[str, Any]], nodes: int
) -> tuple[Reason, str] | None:
    """Workers the Job controller cannot create (FailedCreate): the namespace's Pod Security
    level, a ResourceQuota or a LimitRange rejects the pod."""
    if sum(1 for p in pods if alive(p)) >= nodes:
        return None
    found = [w for w in warnings if w.get("reason") == "FailedCreate"]
    if not found:
        return None
    detail = (_latest(found).get("message") or "").strip()[:500]
    text = f"the worker pods cannot be created: {detail}"
    if "PodSecurity" in detail:
        text += (
            " (the namespace's pod-security.kubernetes.io/enforce level forbids what "
            "spec.template.securityContext adds: remove it, or run the job in a namespace whose "
            "level allows it)"
        )
    elif "quota" in detail.lower():
        text += " (free or raise the namespace's ResourceQuota; the Job controller retries)"
    return Reason.PODS_REJECTED, text


def _pod_blocked(pods: list[dict[str, Any]]) -> tuple[Reason, str] | None:
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if not alive(pod):
            continue
        who = f"worker {_index(pod)} ({pod['metadata']['name']})"
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                detail = (cond.get("message") or "no node fits it").strip()
                return Reason.UNSCHEDULABLE, f"{who} cannot be scheduled: {detail[:500]}"
        images = {c["name"]: c.get("image", "") for c in pod.get("spec", {}).get("containers", [])}
        for state in status.get("containerStatuses") or []:
            waiting = (state.get("state") or {}).get("waiting") or {}
            why = waiting.get("reason")
            if why not in _IMAGE_PROBLEMS and why not in _START_PROBLEMS:
                continue
            image = images.get(state.get("name", "")) or state.get("image", "")
            detail = (waiting.get("message") or "").strip()
            text = f"{who} cannot start image {image!r}: {why}" + (
                f": {detail[:500]}" if detail else ""
            )
            if why in _IMAGE_PROBLEMS:
                return Reason.IMAGE_UNAVAILABLE, text + (
                    " (check spec.template.image and that the node can pull it)"
                )
            return Reason.CONTAINER_CANNOT_START, text
    return None
