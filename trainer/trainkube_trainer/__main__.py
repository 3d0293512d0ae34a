"""`python -m trainkube_trainer --config run.json`: one attempt of one job on this worker.

Exit codes (`trainkube.exitcodes.ExitCode`, shared with the operator) tell the operator what
happened; rank 0 also leaves `result.json` in the reporting folder with the outcome and the last
progress.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from trainkube.exitcodes import ExitCode
from trainkube.runconfig import RunConfig, Task
from trainkube_trainer import secrets
from trainkube_trainer.exitcodes import DivergedError, exit_now
from trainkube_trainer.reporting import Reporter, log, sink_for


def _is_out_of_memory(error: BaseException) -> bool:
    import torch  # noqa: PLC0415

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _is_configuration_error(error: BaseException) -> bool:
    """An error the job's spec causes (a model, data or evaluation it cannot have), which a
    restart cannot fix; each names the field and what to do."""
    from trainkube_trainer.data.source import DataError  # noqa: PLC0415
    from trainkube_trainer.evaluate import EvalError  # noqa: PLC0415
    from trainkube_trainer.models import ModelError  # noqa: PLC0415
    from trainkube_trainer.tokenizer import TokenizerError  # noqa: PLC0415

    return isinstance(error, DataError | EvalError | ModelError | TokenizerError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkube_trainer", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the run config (JSON)")
    # The deepspeed launcher passes --local_rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    secrets.install()  # no Secret value this process reads reaches its log
    try:
        config = RunConfig.load(args.config)
    except (OSError, ValueError, ValidationError) as error:
        log("invalid-config", error=str(error))
        return ExitCode.INVALID_CONFIG

    from trainkube_trainer import distributed  # noqa: PLC0415

    env = distributed.start()
    reporting = config.reporting
    reporter = Reporter(
        Path(reporting.directory),
        enabled=env.is_main,
        min_interval=reporting.min_interval_seconds,
        sink=sink_for(reporting.configmap, reporting.namespace) if env.is_main else None,
        hang_timeout=reporting.hang_timeout_seconds,
    )
    reporter.state["attempt"] = config.attempt  # reports say which attempt they belong to
    log(
        "start",
        job=config.job,
        attempt=config.attempt,
        task=config.task,
        rank=env.rank,
        world_size=env.world_size,
        device="cpu" if env.on_cpu else "cuda",
    )
    try:
        if config.task is Task.EVAL:
            from trainkube_trainer import evaluate  # noqa: PLC0415

            code = evaluate.run(config, env, reporter)
        else:
            from trainkube_trainer import train  # noqa: PLC0415

            code = train.run(config, env, reporter)
    except DivergedError as diverged:
        reporter.result(
            outcome="diverged",
            exit_code=ExitCode.DIVERGED,
            divergence={"step": diverged.step, "loss": diverged.loss, "rule": diverged.rule},
        )
        distributed.finish()
        return ExitCode.DIVERGED
    except Exception as error:
        if _is_configuration_error(error):
            # Deterministic: the same spec meets the same error; the operator fails the job.
            reporter.result(
                outcome="invalidConfig",
                exit_code=ExitCode.INVALID_CONFIG,
                error=f"{type(error).__name__}: {error}",
            )
            return ExitCode.INVALID_CONFIG
        if _is_out_of_memory(error):
            reporter.result(
                outcome="outOfMemory", exit_code=ExitCode.OUT_OF_MEMORY, error=str(error)
            )
            return ExitCode.OUT_OF_MEMORY
        reporter.result(
            outcome="failed", exit_code=ExitCode.FAILED, error=f"{type(error).__name__}: {error}"
        )
        raise
    outcome = {ExitCode.SUCCESS: "succeeded", ExitCode.GATES_FAILED: "gatesFailed"}[code]
    reporter.result(outcome=outcome, exit_code=code)
    distributed.finish()
    return code


if __name__ == "__main__":
    # A code main returns is the run's outcome and must reach the operator as it is. A usage
    # error or an uncaught exception ends the usual way: a failure either way.
    exit_now(main())
