"""The mean time between failures a job's auto checkpoint interval is planned for (pure).

The prior is the spec's `checkpoints.mtbfHours`, or 5,700 node-hours divided by the job's nodes:
Llama 3's pre-training saw 466 interruptions in 54 days on 16,384 GPUs (2,048 nodes of 8), one
per ~5,700 hours of a node. The job's own history refines it: its running time so far and its
failures (restarts and disruptions) are added to one pseudo-failure at the prior, so a job that
keeps failing checkpoints more often, and one that never fails drifts towards its record.
"""

from __future__ import annotations

from trainkube import timestamps
from trainkube.api.status import JobStatus

NODE_MTBF_HOURS = 5700.0


def prior_seconds(mtbf_hours: float | None, nodes: int) -> float:
    if mtbf_hours is not None:
        return mtbf_hours * 3600
    return NODE_MTBF_HOURS * 3600 / max(1, nodes)


def refined_seconds(prior: float, status: JobStatus, now: str) -> float:
    """The prior, refined by the job's running time and failures so far."""
    running = 0.0
    for attempt in status.attempts:
        end = attempt.end_time or now
        if attempt.start_time and end:
            running += max(0.0, timestamps.epoch(end) - timestamps.epoch(attempt.start_time))
    recovery = status.recovery
    failures = (recovery.restarts + recovery.disruptions) if recovery else 0
    return (prior + running) / (1 + failures)
