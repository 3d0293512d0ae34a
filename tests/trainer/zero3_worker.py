"""One rank of the ZeRO-3 validation-and-output run: builds the trainer's engine for the tiny
model under ZeRO-3 (a real plan), runs the trainer's validation over the first --sequences
held-out sequences, saves the output the trainer's way, and writes to --out as JSON the
validation loss, the sequences, and the engine's logits on the first of them.

    python -m tests.trainer.zero3_worker --root R --sequences 5 --out o.json  (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT and TRAINKUBE_TOKENS_CACHE in the environment)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from tests.trainer.runs import pretrain_config
from trainkube_trainer import distributed
from trainkube_trainer.datasets_split import train_and_validation
from trainkube_trainer.engine import build
from trainkube_trainer.models import load_tokenizer
from trainkube_trainer.train import _save_output, _validate

MICRO = 2  # 5 sequences on 2 ranks: rank 0 runs [0, 1] and [4], rank 1 [2, 3] and nothing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--sequences", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    env = distributed.start()
    config = pretrain_config(args.root, stage=3, ranks=env.world_size, steps=4)
    assert config.data is not None
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    _, validation = train_and_validation(
        config.data,
        tokenizer,
        seed=config.seed,
        model=config.model,
        local_main=env.local_rank == 0,
        barrier=torch.distributed.barrier,
    )
    validation = dataclasses.replace(validation, count=args.sequences)
    built = build(config, env, total_steps=4, universal=False)
    assert built.ds_config["zero_optimization"]["stage"] == 3
    loss = _validate(built, validation, env, MICRO)
    ids, labels = validation.batch(range(args.sequences))
    with torch.no_grad():
        logits = built.engine(input_ids=ids[:1]).logits
    written = _save_output(config, built, env)
    if env.is_main:
        result = {
            "validationLoss": loss,
            "logits": logits[0, :8].tolist(),
            "written": written,
            "ids": ids.tolist(),
            "labels": labels.tolist(),
        }
        args.out.write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
