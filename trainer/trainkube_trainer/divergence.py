"""Divergence detection, on rank 0: NaN/Inf at once; a spike when the loss is above
mean + threshold x std (or above ratio x mean) of the previous `window` steps for `patience`
consecutive steps. Spiking steps do not enter the window, so a spike cannot raise its own bar."""

from __future__ import annotations

import math
from collections import deque
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
