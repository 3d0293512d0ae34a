"""The trainer's exit codes: how a worker tells the operator what happened, beyond success and
failure. The trainer exits with them and the operator reads them from the terminated container,
so both import this one definition. Standard library only: the trainer image installs the
`trainkube` package without the operator's dependencies."""

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    FAILED = 1
    INVALID_CONFIG = 2  # the run config was refused; restarting would not help
    DIVERGED = 10  # loss spike or NaN/Inf: the operator rolls back
    OUT_OF_MEMORY = 11  # the operator escalates the plan
    GATES_FAILED = 12  # evaluation ran; a gate did not hold
