"""Test hooks: off unless the operator runs with TRAINKUBE_ENABLE_TEST_HOOKS=1.

The fault annotation (trainkube.io/fault: crashes, NaNs and loss spikes injected into the
trainer) is obeyed only then; otherwise a job that carries it runs as if it did not.

Crash points let a chaos test kill the operator exactly between two API calls, the windows
that random kills rarely hit: TRAINKUBE_CRASH_POINTS="status-written=0.1,attempt-created=0.3"
makes the process exit at once (code 137, as if SIGKILLed) with that probability each time it
passes the named point; TRAINKUBE_CRASH_SEED makes the draws repeatable.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping

ENABLE = "TRAINKUBE_ENABLE_TEST_HOOKS"
POINTS = ("output-recorded", "status-written", "attempt-deleted", "attempt-created")
log = logging.getLogger("trainkube")


class CrashPoints:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.odds: dict[str, float] = {}
        self.enabled = env.get(ENABLE) == "1"
        if self.enabled:
            for item in filter(None, env.get("TRAINKUBE_CRASH_POINTS", "").split(",")):
                point, _, odds = item.partition("=")
                if point.strip() not in POINTS:
                    raise ValueError(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
                self.odds[point.strip()] = float(odds or 1)
        seed = env.get("TRAINKUBE_CRASH_SEED")
        self.random = random.Random(int(seed) if seed else None)

    def reached(self, point: str) -> None:
        odds = self.odds.get(point)
        if odds and self.random.random() < odds:
            log.warning("test hook: crashing at %s", point)
            logging.shutdown()
            os._exit(137)
