"""Hang detection (pure): a run whose workers all run but whose step has not advanced for too
long is hung: a collective that never returns, a rank stuck in a driver, a dead NIC.

The clock starts at the latest of the trainer's last finished step (`lastStepAt`, which rank 0
reports with every heartbeat, between steps too) and the moment the last worker started (so
scheduling and image pulls never count). The time allowed is `failurePolicy.hangTimeoutSeconds`,
or, when unset, ten times the run's own mean step time with a floor of five minutes; the slow
phases (starting up, validating, checkpointing, saving the output) get four times that. A
report can be one heartbeat old when it is read, so that much more is always allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainkube import timestamps
from trainkube.controller import workers

FLOOR_SECONDS = 300.0
STEP_MULTIPLE = 10.0
SLOW_PHASES = frozenset({"starting", "validating", "checkpointing", "saving", "rollingBack"})
SLOW_FACTOR = 4.0
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


def allowed(progress: dict[str, Any], timeout_seconds: int | None) -> float:
    """Seconds without a step that still count as progress, in the phase the trainer reports."""
    if timeout_seconds is not None:
        base = float(timeout_seconds)
    else:
        step_seconds = progress.get("stepSeconds")
        measured = STEP_MULTIPLE * float(step_seconds) if step_seconds else 0.0
        base = max(FLOOR_SECONDS, measured)
    phase = progress.get("phase") if "lastStepAt" in progress else "starting"
    return base * SLOW_FACTOR if phase in SLOW_PHASES else base


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
    limit = allowed(progress, timeout_seconds)
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
    return Verdict(
        stalled > limit + REPORT_LAG_SECONDS, stalled, limit + REPORT_LAG_SECONDS, message
    )
