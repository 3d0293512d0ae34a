"""What an attempt's batch Job and pods say: finished, failed (and why, from the exit code the
trainer chose), how many workers run."""

from __future__ import annotations

from typing import Any

from trainkube.api.status import Reason
from trainkube.exitcodes import ExitCode

ENDED = ("Succeeded", "Failed")
_BY_EXIT_CODE = {
    ExitCode.DIVERGED: Reason.DIVERGED,
    ExitCode.OUT_OF_MEMORY: Reason.OUT_OF_MEMORY,
    ExitCode.GATES_FAILED: Reason.GATES_FAILED,
}


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


def attempt_failed(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """Whether an attempt's batch Job failed, or any of its workers did."""
    return bool(job_condition(job, "Failed")) or any(phase(p) == "Failed" for p in pods)


def failure(pods: list[dict[str, Any]]) -> tuple[Reason, str]:
    """Why an attempt failed, from the first worker that exited non-zero."""
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
