"""How training ends early on divergence. The exit codes themselves are shared with the operator
in `trainkube.exitcodes`."""


class DivergedError(Exception):
    """Training diverged at `step` with `loss` by `rule`."""

    def __init__(self, step: int, loss: float, rule: str) -> None:
        super().__init__(f"diverged at step {step}: loss {loss} ({rule})")
        self.step, self.loss, self.rule = step, loss, rule
