"""Prometheus metrics of the operator: jobs by kind and phase, reconcile latency and errors."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram, start_http_server

JOBS = Gauge("trainkube_jobs", "trainkube jobs by kind and phase", ["kind", "phase"])
RECONCILE_SECONDS = Histogram(
    "trainkube_reconcile_seconds",
    "time one reconcile of one job takes",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = PromCounter(
    "trainkube_reconcile_errors_total", "reconciles that raised an error", ["kind"]
)
LEADER = Gauge("trainkube_leader", "1 when this replica holds the leader lease")
PHASES = ("Pending", "Planned", "Running", "RollingBack", "Suspended", "Succeeded", "Failed")


def record_jobs(kind: str, bodies: list[dict[str, Any]]) -> None:
    """Set the per-phase job counts of one kind from a full listing."""
    counts = Counter((b.get("status") or {}).get("phase") or "Pending" for b in bodies)
    for phase in PHASES:
        JOBS.labels(kind=kind, phase=phase).set(counts.get(phase, 0))


def serve(port: int) -> None:
    """Serve /metrics on `port` (0: do not serve)."""
    if port:
        start_http_server(port)
