"""Hang detection (pure): a run whose workers all run but whose step has not advanced for too
long is hung: a collective that never returns, a rank stuck in a driver, a dead NIC.

The clock starts at the latest of the trainer's last finished step (`lastStepAt`, which rank 0
reports with every heartbeat, between steps too) and the moment the last worker started (so
scheduling and image pulls never count). The time allowed is trainkube.hangrule's.

A report is proof by itself: it says when it was sent (`sentAt`, the trainer's clock, the same
clock as `lastStepAt`), and rank 0's heartbeat sends one as soon as the time allowed has passed
since the last step (it knows the rule and the timeout). So a hung rank 0 that still runs its
heartbeat is called hung one report after the limit, not a heartbeat later. When reports stop
altogether (the process frozen, the node gone), the clock reads the operator's `now`; a report
can then be one heartbeat old when it is read, so that much more is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainkube import timestamps
from trainkube.controller import workers
from trainkube.hangrule import allowed_seconds

REPORT_LAG_SECONDS = 10.0  # the trainer's heartbeat interval (runconfig.Reporting)


@dataclass(frozen=True)
class Verdict:
    hung: bool
    stalled_seconds: float
    allowed_seconds: float
    message: str

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.allowed_seconds - self.stalled_seconds)


def check(
    progress: dict[str, Any], pods: list[dict[str, Any]], now: str, timeout_seconds: int | None
) -> Verdict | None:
    """Whether the running attempt is hung; None when there is no clock to read yet."""
    first = workers.started_at(pods)
    started = timestamps.epoch(first) if first else None
    last_step = progress.get("lastStepAt")
    marks = [t for t in (started, timestamps.epoch(last_step) if last_step else None) if t]
    if not marks or not now:
        return None
    since = max(marks)
    stalled = timestamps.epoch(now) - since
    limit = allowed_seconds(progress, timeout_seconds)
    phase = progress.get("phase") if last_step else "starting"
    where = (
        f"the last step ({progress.get('lastStep')}) ended {stalled:.0f} s ago"
        if last_step and since != started
        else f"the workers started {stalled:.0f} s ago and no step has ended since"
    )
    message = (
        f"no training step for {stalled:.0f} s ({where}; {limit:.0f} s allowed in phase "
        f"{phase}, failurePolicy.hangTimeoutSeconds): the workers are hung"
    )
    sent = progress.get("sentAt")
    proven = timestamps.epoch(sent) - since if sent and last_step else 0.0
    hung = proven > limit or stalled > limit + REPORT_LAG_SECONDS
    return Verdict(hung, stalled, limit + REPORT_LAG_SECONDS, message)
