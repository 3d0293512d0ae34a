"""Deterministic names and labels of a job's children.

Every child name carries the job's kind (`x-ltj-a1`, `x-ftj-a1`, `x-evj-a1`), so jobs of
different kinds may share a name in one namespace. Names that would be too long keep a prefix of
the job's name and add a hash of kind and name, so two long names never collide; the job label's
value is shortened the same way (label values stay within 63 characters for any name the API
accepts).
"""

from __future__ import annotations

import hashlib
from typing import Any

GROUP = "trainkube.io"
MANAGED_BY = "trainkube-operator"
JOB_LABEL = f"{GROUP}/job"
KIND_LABEL = f"{GROUP}/kind"
ATTEMPT_LABEL = f"{GROUP}/attempt"
COMPONENT_LABEL = "app.kubernetes.io/component"
REPORT_LABEL = f"{GROUP}/report"
OUTPUT_RECORD_LABEL = f"{GROUP}/output-record"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SHORT_KINDS = {"LLMTrainingJob": "ltj", "FineTuneJob": "ftj", "EvalJob": "evj"}
LABEL_LIMIT = 63


def _digest(kind: str, job: str) -> str:
    return hashlib.sha256(f"{kind}/{job}".encode()).hexdigest()[:8]


def _fit(job: str, kind: str, tail: str, limit: int) -> str:
    """`job` + `tail` within `limit` characters: the job's name cut short, with a hash of kind
    and name, when it does not fit whole."""
    if len(job) + len(tail) <= limit:
        return job + tail
    digest = f"-{_digest(kind, job)}"
    return job[: limit - len(tail) - len(digest)].rstrip("-.") + digest + tail


def _child(kind: str, job: str, suffix: str, limit: int = 253) -> str:
    return _fit(job, kind, f"-{SHORT_KINDS[kind]}-{suffix}", limit)


def job_label(kind: str, job: str) -> str:
    """The value of the job label on every child (the name, or a hashed prefix of it)."""
    return _fit(job, kind, "", LABEL_LIMIT)


def service_name(kind: str, job: str) -> str:
    return _child(kind, job, "workers", limit=63)


def attempt_job_name(kind: str, job: str, attempt: int) -> str:
    # Indexed Job pods are named <job>-<index>-<random>: keep room for that within 63.
    return _child(kind, job, f"a{attempt}", limit=52)


def run_config_name(kind: str, job: str, attempt: int) -> str:
    return _child(kind, job, f"run-a{attempt}")


def report_name(kind: str, job: str) -> str:
    return _child(kind, job, "report")


def account_name(kind: str, job: str) -> str:
    return _child(kind, job, "worker")


def checkpoint_claim_name(kind: str, job: str) -> str:
    return _child(kind, job, "checkpoints")


def output_record_name(kind: str, job: str) -> str:
    return _child(kind, job, "output")


def selector(kind: str, job: str) -> dict[str, str]:
    """The labels that select one job's children (and nothing of another kind)."""
    return {JOB_LABEL: job_label(kind, job), KIND_LABEL: kind}


def labels(
    *, kind: str, job: str, component: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Labels every child carries (the user's template labels first, ours win)."""
    return {
        **(extra or {}),
        "app.kubernetes.io/name": "trainkube",
        "app.kubernetes.io/instance": job_label(kind, job),
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: component,
        **selector(kind, job),
    }


def owner_key(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, kind, job label) of the job that owns a labelled child, if any."""
    meta = obj.get("metadata") or {}
    found = meta.get("labels") or {}
    if JOB_LABEL not in found or KIND_LABEL not in found:
        return None
    return meta.get("namespace") or "", found[KIND_LABEL], found[JOB_LABEL]


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
