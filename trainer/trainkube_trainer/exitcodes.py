"""Exit codes: how a worker tells the operator what happened, beyond success and failure."""

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    FAILED = 1
    INVALID_CONFIG = 2
    DIVERGED = 10  # loss spike or NaN/Inf: the operator rolls back
    OUT_OF_MEMORY = 11  # the operator escalates the plan
    GATES_FAILED = 12  # evaluation ran; a gate did not hold


class DivergedError(Exception):
    """Training diverged at `step` with `loss` by `rule`."""

    def __init__(self, step: int, loss: float, rule: str) -> None:
        super().__init__(f"diverged at step {step}: loss {loss} ({rule})")
        self.step, self.loss, self.rule = step, loss, rule
