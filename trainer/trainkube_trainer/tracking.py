"""Weights & Biases, from rank 0 only: offline unless an API key file is given (never online
without a key: a bad key blocks for minutes), the same run resumed across attempts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from trainkube.api.tracking import WandbMode
from trainkube.runconfig import RunConfig
from trainkube_trainer import secrets
from trainkube_trainer.distributed import DistEnv


def start(config: RunConfig, env: DistEnv) -> Any:
    tracking = config.tracking
    if tracking is None or not env.is_main or tracking.mode is WandbMode.DISABLED:
        return None
    import wandb  # noqa: PLC0415

    mode: Literal["online", "offline"] = (
        "online" if tracking.mode is WandbMode.ONLINE else "offline"
    )
    if tracking.api_key_file and Path(tracking.api_key_file).exists():
        os.environ["WANDB_API_KEY"] = secrets.read(tracking.api_key_file)
    elif mode == "online":
        mode = "offline"
    return wandb.init(
        project=tracking.project,
        entity=tracking.entity,
        id=tracking.run_id,
        resume="allow" if tracking.run_id else None,
        mode=mode,
        dir=tracking.directory,
        config={
            "job": config.job,
            "attempt": config.attempt,
            "lrFactor": config.recovery.lr_factor,
        },
        settings=wandb.Settings(init_timeout=60, silent=True),
    )


def log(run: Any, values: dict[str, float], step: int) -> None:
    if run is not None:
        run.log(values, step=step)


def finish(run: Any) -> None:
    if run is not None:
        run.finish()
