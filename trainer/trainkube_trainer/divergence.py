"""Divergence detection: NaN/Inf at once; a spike when the loss is above mean + threshold x std
(or above ratio x mean) of the previous `window` steps for `patience` consecutive steps.
Spiking steps do not enter the window, so a spike cannot raise its own bar.

Every rank runs its own detector on the same losses (means over all ranks, the same numbers
everywhere), so every rank reaches the same verdict at the same step with no message between
them."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from trainkube.api.recovery import SpikeRule


@dataclass(frozen=True)
class Verdict:
    step: int
    loss: float
    rule: str


@dataclass
class DivergenceDetector:
    rule: SpikeRule
    history: deque[float] = field(default_factory=deque)
    streak: int = 0

    def observe(self, step: int, loss: float) -> Verdict | None:
        """Record the loss of `step`; a Verdict when training has diverged."""
        if not math.isfinite(loss):
            return Verdict(step, loss, "nan" if math.isnan(loss) else "inf")
        window = self.rule.window
        if len(self.history) >= min(window, 5):
            mean = sum(self.history) / len(self.history)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.history) / len(self.history))
            bar = mean + self.rule.threshold * std
            spiking = loss > bar or (self.rule.ratio is not None and loss > self.rule.ratio * mean)
            if spiking:
                self.streak += 1
                if self.streak >= self.rule.patience:
                    how = f"loss {loss:.4g} > mean {mean:.4g} + {self.rule.threshold:g} sigma"
                    if self.rule.ratio is not None and loss > self.rule.ratio * mean:
                        how = f"loss {loss:.4g} > {self.rule.ratio:g} x mean {mean:.4g}"
                    return Verdict(step, loss, f"spike: {how} for {self.streak} steps")
                return None
        self.streak = 0
        self.history.append(loss)
        while len(self.history) > window:
            self.history.popleft()
        return None

    def observe_steps(self, losses: Iterable[tuple[int, float]]) -> Verdict | None:
        """`observe` each (step, loss) in order; the first Verdict, after which the rest are
        not observed."""
        for step, loss in losses:
            verdict = self.observe(step, loss)
            if verdict is not None:
                return verdict
        return None
