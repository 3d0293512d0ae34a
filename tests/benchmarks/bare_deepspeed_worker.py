"""One rank of the bare DeepSpeed script the trainer is measured against
(tests/benchmarks/trainer_vs_deepspeed.py): launched by the deepspeed launcher as the trainer
is, with the same run config.

It passes `deepspeed.initialize` what the trainer passes (engine.build: the same model, DeepSpeed
config and client optimizer, after the same seeding), trains on the same sequences (the
trainer's feed, read into tensors before the first step) with the same micro-batches and
accumulation, and does nothing per step but forward, backward and step. Rank 0 writes the
DeepSpeed config and optimizer it built with, the seconds from just before its first step to the
end of its last (as the trainer's tokensPerSecond counts them), and the loss of the last step
(mean over micro-batches and ranks, after the timing) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from trainkube.runconfig import RunConfig
from trainkube_trainer import distributed
from trainkube_trainer.data.feed import Feed
from trainkube_trainer.data.sampler import BatchSampler
from trainkube_trainer.datasets_split import train_and_validation
from trainkube_trainer.engine import build
from trainkube_trainer.exitcodes import exit_now
from trainkube_trainer.models import load_tokenizer


def optimizer_hyperparameters(optimizer: Any) -> dict[str, Any] | None:
    """The client optimizer's class and its first parameter group without the parameters."""
    if optimizer is None:
        return None
    group = optimizer.param_groups[0]
    return {
        "class": type(optimizer).__name__,
        **{key: value for key, value in group.items() if key != "params"},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = RunConfig.load(args.config)
    assert config.training is not None
    assert config.data is not None
    assert config.plan is not None
    steps = config.training.max_steps
    env = distributed.start()
    # The trainer's set-up order (train._setup): seed, tokenizer, data, engine.
    torch.manual_seed(config.seed)
    train, _ = train_and_validation(
        config.data,
        load_tokenizer(config.model),
        seed=config.seed,
        model=config.model,
        local_main=env.local_rank == 0,
        barrier=torch.distributed.barrier,
    )
    ds = config.plan.deepspeed
    sampler = BatchSampler(
        examples=len(train),
        global_batch_size=ds["train_batch_size"],
        micro_batch_size=ds["train_micro_batch_size_per_gpu"],
        ranks=env.world_size,
        seed=config.seed,
    )
    built = build(config, env, total_steps=steps, universal=False)
    engine = built.engine
    optimizer = optimizer_hyperparameters(engine.client_optimizer)  # before the first step
    feed = Feed(sampler, train, env.rank)
    batches = [list(feed.micro_batches(step)) for step in range(steps)]

    losses = []
    started = time.monotonic()
    for step, micro_batches in enumerate(batches, start=1):
        for ids, labels in micro_batches:
            loss = engine(input_ids=ids, labels=labels).loss
            engine.backward(loss)
            engine.step()
            if step == steps:
                losses.append(float(loss))
    seconds = time.monotonic() - started
    last = distributed.mean_over_ranks(sum(losses), len(losses), torch.device("cpu"))
    if env.is_main:
        args.out.write_text(
            json.dumps(
                {
                    "deepspeed": built.ds_config,
                    "optimizer": optimizer,
                    "seconds": seconds,
                    "steps": steps,
                    "loss": last,
                },
                default=str,
            )
        )
    distributed.finish()


if __name__ == "__main__":
    main()
    # As the trainer ends (exit_now): a collective backend's threads torn down at the
    # interpreter's exit can abort the process ("terminate called without an active
    # exception"), and the launcher then takes the run for failed.
    exit_now(0)
