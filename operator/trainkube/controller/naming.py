"""Deterministic names and labels of a job's children."""

from __future__ import annotations

from typing import Any

GROUP = "trainkube.io"
MANAGED_BY = "trainkube-operator"
JOB_LABEL = f"{GROUP}/job"
KIND_LABEL = f"{GROUP}/kind"
ATTEMPT_LABEL = f"{GROUP}/attempt"
COMPONENT_LABEL = "app.kubernetes.io/component"
REPORT_LABEL = f"{GROUP}/report"


def _short(name: str, suffix: str, limit: int = 63) -> str:
    """`name-suffix` within `limit` characters (names longer than that are cut)."""
    return f"{name[: limit - len(suffix) - 1]}-{suffix}"


def service_name(job: str) -> str:
    return _short(job, "workers")


def attempt_job_name(job: str, attempt: int) -> str:
    # Indexed Job pods are named <job>-<index>-<random>: keep room for that within 63.
    return _short(job, f"a{attempt}", limit=52)


def run_config_name(job: str, attempt: int) -> str:
    return _short(job, f"run-a{attempt}", limit=253)


def report_name(job: str) -> str:
    return _short(job, "report", limit=253)


def account_name(job: str) -> str:
    return _short(job, "worker", limit=253)


def checkpoint_claim_name(job: str) -> str:
    return _short(job, "checkpoints", limit=253)


def labels(
    *, kind: str, job: str, component: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Labels every child carries (the user's template labels first, ours win)."""
    return {
        **(extra or {}),
        "app.kubernetes.io/name": "trainkube",
        "app.kubernetes.io/instance": job,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        COMPONENT_LABEL: component,
        JOB_LABEL: job,
        KIND_LABEL: kind,
    }


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to the job, so deleting the job deletes its children."""
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
