"""When to save a checkpoint: every `interval` steps, or (interval auto) by the Young-Daly
rule, interval = sqrt(2 x save time x MTBF), which minimises the expected time lost to saving
plus the time lost to recomputing after a failure.

Auto needs the step time and the save time: rank 0 measures the first over `PROBE_STEPS`
steps and plans the first save with a guessed save time (`SAVE_GUESS_SECONDS`), then plans
again after every save from the time that save took. Each plan is a step number broadcast from
rank 0 at a step every rank reaches, so all ranks save at the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PROBE_STEPS = 5
SAVE_GUESS_SECONDS = 30.0


def young_daly_seconds(save_seconds: float, mtbf_seconds: float) -> float:
    return math.sqrt(2.0 * save_seconds * mtbf_seconds)


@dataclass
class Choice:
    """A planned interval, and why (for the report)."""

    steps: int
    seconds: float
    save_seconds: float
    measured: bool
    mtbf_seconds: float

    def report(self) -> dict[str, Any]:
        source = "measured" if self.measured else "guessed"
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "saveSeconds": round(self.save_seconds, 2),
            "mtbfHours": round(self.mtbf_seconds / 3600, 2),
            "reason": f"Young-Daly: sqrt(2 x {self.save_seconds:.1f} s save ({source}) x "
            f"{self.mtbf_seconds / 3600:.1f} h MTBF) = {self.seconds:.0f} s = {self.steps} steps",
        }


def choose(
    step_seconds: float, save_seconds: float, mtbf_seconds: float, *, measured: bool
) -> Choice:
    seconds = young_daly_seconds(save_seconds, mtbf_seconds)
    steps = max(1, round(seconds / max(step_seconds, 1e-6)))
    return Choice(steps, seconds, save_seconds, measured, mtbf_seconds)


class Schedule:
    """Which steps save. Fixed: multiples of `every`. Auto: `next_save`, planned on rank 0."""

    def __init__(self, every: int, mtbf_seconds: float | None) -> None:
        self.every, self.mtbf = every, mtbf_seconds
        self.next_save: int | None = None
        self.choice: Choice | None = None

    @property
    def auto(self) -> bool:
        return self.mtbf is not None

    def due(self, step: int, total: int) -> bool:
        if step == total:
            return True
        if not self.auto:
            return step % self.every == 0
        return self.next_save is not None and step >= self.next_save

    def needs_plan(self, step: int, started_at: int) -> bool:
        """Whether this step is one where auto plans (every rank reaches the same answer)."""
        return self.auto and self.next_save is None and step - started_at >= PROBE_STEPS

    def plan(self, step: int, step_seconds: float, save_seconds: float | None) -> Choice:
        """Rank 0's plan: the next save step from here."""
        assert self.mtbf is not None
        save = SAVE_GUESS_SECONDS if save_seconds is None else save_seconds
        choice = choose(step_seconds, save, self.mtbf, measured=save_seconds is not None)
        self.choice = choice
        return choice

    def adopt(self, step: int, steps: int) -> None:
        """Every rank: save next `steps` after `step`."""
        self.next_save = step + steps
