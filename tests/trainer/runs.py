"""Running the real trainer: run configs for tests, and worker processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_port
from trainkube.api.data import BuiltinCorpus
from trainkube.api.model import Architecture
from trainkube.api.recovery import SpikeRule
from trainkube.api.training import Training
from trainkube.planner import Overrides, PlanRequest, plan, shape_of
from trainkube.planner.memory import GiB
from trainkube.planner.plan import Optimizer
from trainkube.runconfig import (
    CheckpointPolicy,
    DataRef,
    ModelRef,
    Output,
    Plan,
    Reporting,
    RunConfig,
    Task,
)

TINY = Architecture(layers=2, hidden_size=64, heads=4, vocab_size=259, context_length=128)
REPO = Path(__file__).resolve().parents[2]
EXTENSIONS = Path(os.environ.get("TRAINKUBE_CACHE_DIR", Path.home() / ".cache" / "trainkube"))


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    result: dict[str, Any]
    progress: dict[str, Any]
    log: str


def deepspeed_plan(
    *, stage: int, ranks: int, training: Training, seq: int, micro: int | None = None
) -> Plan:
    """A real plan from the planner, with the ZeRO stage forced."""
    request = PlanRequest(
        shape=shape_of(TINY),
        sequence_length=seq,
        global_batch_size=training.global_batch_size,
        nodes=ranks,
        gpus_per_node=0,
        gpu_memory=0,
        cpu_memory_per_node=4 * GiB,
        overrides=Overrides(zero_stage=stage, micro_batch_size=micro),
        optimizer=Optimizer(
            learning_rate=training.learning_rate,
            warmup_steps=training.warmup_steps,
            total_steps=training.max_steps or 0,
            schedule=training.lr_schedule,
        ),
    )
    chosen = plan(request)
    return Plan(
        deepspeed=chosen.deepspeed_config,
        activation_checkpointing=chosen.activation_checkpointing,
        zero_stage=chosen.rung.stage,
    )


def pretrain_config(
    root: Path,
    *,
    stage: int = 2,
    ranks: int = 2,
    steps: int = 40,
    interval: int = 20,
    lr: float = 3e-3,
    **changes: Any,
) -> RunConfig:
    training = Training(
        max_steps=steps, global_batch_size=16, learning_rate=lr, warmup_steps=2, log_interval=5
    )
    config = RunConfig(
        task=Task.PRETRAIN,
        job="tests/tiny",
        model=ModelRef(architecture=TINY),
        data=DataRef(
            builtin=BuiltinCorpus.TINY_STORIES, sequence_length=64, validation_fraction=0.05
        ),
        training=training,
        plan=deepspeed_plan(stage=stage, ranks=ranks, training=training, seq=64, micro=4),
        checkpoints=CheckpointPolicy(directory=str(root / "ckpt"), interval=interval, keep_last=3),
        divergence=SpikeRule(window=10, threshold=6.0, patience=2),
        output=Output(directory=str(root / "out")),
        reporting=Reporting(directory=str(root / "report"), min_interval_seconds=0),
    )
    return config.model_copy(update=changes)


def rank_environment(rank: int, ranks: int, port: int) -> dict[str, str]:
    """torch.distributed's environment variables for `rank` of `ranks` processes on this
    machine, meeting at `port`."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(ranks),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def spawn_ranks(
    module: str, ranks: int, args: Callable[[int], list[str]], *, cache: Path
) -> list[subprocess.Popen[bytes]]:
    """`python -m module` once per rank, as torch.distributed's environment variables make
    them one gloo group on this machine (no launcher), each with `args(rank)`."""
    port = free_port()
    processes = []
    for rank in range(ranks):
        env = {
            **os.environ,
            **rank_environment(rank, ranks, port),
            "TRAINKUBE_TOKENS_CACHE": str(cache),
            "TORCH_EXTENSIONS_DIR": str(EXTENSIONS / "torch_extensions"),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        command = [sys.executable, "-m", module, *args(rank)]
        processes.append(subprocess.Popen(command, env=env, cwd=REPO))
    return processes


def environment() -> dict[str, str]:
    """The environment `run` gives the trainer: one thread per rank, no hub, wandb offline."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": str(EXTENSIONS / "torch_extensions"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }


def run(
    config: RunConfig,
    root: Path,
    *,
    ranks: int = 2,
    name: str = "run.json",
    module: str = "trainkube_trainer",
    extra_env: dict[str, str] | None = None,
) -> Outcome:
    """Run the trainer as `ranks` real processes; wait for them to end. `module` and
    `extra_env`: for a benchmark that runs the trainer through a wrapper
    (tests.benchmarks.engine_calls)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(config.dump())
    report = Path(config.reporting.directory)
    for stale in ("result.json", "progress.json"):
        (report / stale).unlink(missing_ok=True)
    env = {**environment(), **(extra_env or {})}
    # The deepspeed launcher (as the worker pods use it) passes a worker's exit code on.
    command = [
        str(Path(sys.executable).parent / "deepspeed"),
        f"--num_gpus={ranks}",
        f"--master_port={free_port()}",
        "--module",
        module,
        "--config",
        str(path),
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )

    def read(name: str) -> dict[str, Any]:
        file = report / name
        return json.loads(file.read_text()) if file.exists() else {}

    return Outcome(
        done.returncode, read("result.json"), read("progress.json"), done.stdout + done.stderr
    )
