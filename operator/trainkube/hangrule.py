"""How long a run may go without finishing a training step before it counts as hung: one rule
that the operator judges by (controller/hang.py) and that rank 0's heartbeat sends a report by
(trainer reporting.py), so the report that proves a hang goes out the moment it is due.

The time allowed is `failurePolicy.hangTimeoutSeconds`, or, when unset, ten times the run's own
mean step time with a floor of five minutes; the slow phases (starting up, validating,
checkpointing, saving the output, rolling back) get four times that. `progress` is the report's
document (`lastStepAt`, `stepSeconds`, `phase`).
"""

from __future__ import annotations

from typing import Any

FLOOR_SECONDS = 300.0
STEP_MULTIPLE = 10.0
SLOW_PHASES = frozenset({"starting", "validating", "checkpointing", "saving", "rollingBack"})
SLOW_FACTOR = 4.0


def allowed_seconds(progress: dict[str, Any], timeout_seconds: int | None) -> float:
    """Seconds without a step that still count as progress, in the phase the trainer reports."""
    if timeout_seconds is not None:
        base = float(timeout_seconds)
    else:
        step_seconds = progress.get("stepSeconds")
        measured = STEP_MULTIPLE * float(step_seconds) if step_seconds else 0.0
        base = max(FLOOR_SECONDS, measured)
    phase = progress.get("phase") if "lastStepAt" in progress else "starting"
    return base * SLOW_FACTOR if phase in SLOW_PHASES else base
