"""How a worker ends: early on divergence (`DivergedError`), and with its exit code
(`exit_now`). The exit codes themselves are shared with the operator in `trainkube.exitcodes`."""

import atexit
import os
import sys
from typing import NoReturn


class DivergedError(Exception):
    """Training diverged at `step` with `loss` by `rule`."""

    def __init__(self, step: int, loss: float, rule: str) -> None:
        super().__init__(f"diverged at step {step}: loss {loss} ({rule})")
        self.step, self.loss, self.rule = step, loss, rule


def exit_now(code: int) -> NoReturn:
    """End the process with `code`, the outcome the run has decided: Python's exit handlers
    run (they flush what libraries buffer), the interpreter's teardown does not. In that
    teardown the collective backends' native threads can abort the process ("terminate called
    without an active exception", SIGABRT; twice in about 50 runs of the P2 benchmark, once
    after `distributed.finish()`), and the deepspeed launcher then exits 250: a run that
    succeeded would count as a crash, and its attempt would be restarted."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
