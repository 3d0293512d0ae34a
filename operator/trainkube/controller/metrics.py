"""Prometheus metrics of the operator: jobs by kind and phase and each job's goodput (read
from the cache at each scrape, no API reads), reconcile latency and errors, the work queue's
depth, leadership."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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


def count_jobs(bodies: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Jobs by (kind, phase); a job without a phase yet is Pending."""
    return Counter((b["kind"], (b.get("status") or {}).get("phase") or "Pending") for b in bodies)


def goodput_ratios(bodies: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """(job, productive / wall) of every job whose status has goodput."""
    for body in bodies:
        found = (body.get("status") or {}).get("goodput") or {}
        wall, productive = found.get("wallSeconds"), found.get("productiveSeconds")
        if wall and productive is not None:
            yield body, productive / wall


class _Jobs(Collector):
    """trainkube_jobs{kind,phase} from the cache of the running controller."""

    def __init__(self) -> None:
        self.cache: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "trainkube_jobs", "trainkube jobs by kind and phase", labels=["kind", "phase"]
        )
        ratio = GaugeMetricFamily(
            "trainkube_job_goodput_ratio",
            "productive training time over wall time since the job first started (status.goodput)",
            labels=["kind", "namespace", "name"],
        )
        if self.cache is not None:
            bodies = self.cache.all_jobs()
            counts = count_jobs(bodies)
            for kind in sorted({k for k, _ in counts}):
                for phase in PHASES:
                    family.add_metric([kind, phase], counts.get((kind, phase), 0))
            for body, value in goodput_ratios(bodies):
                meta = body["metadata"]
                ratio.add_metric([body["kind"], meta["namespace"], meta["name"]], value)
        yield family
        yield ratio


_JOBS = _Jobs()
REGISTRY.register(_JOBS)


def watch_jobs(cache: Any) -> None:
    """Count jobs from `cache` (anything with `all_jobs()`) from now on."""
    _JOBS.cache = cache


def serve(port: int) -> None:
    """Serve /metrics on `port` (0: do not serve)."""
    if port:
        start_http_server(port)
