"""One rank of the ZeRO-3 validation-and-output run: builds the trainer's engine for the tiny
model under ZeRO-3 (a real plan), runs the trainer's validation over the first --sequences
held-out sequences, saves the output the trainer's way, and writes to --out as JSON the
validation loss, the sequences, and the engine's logits on the first of them. With
--lora, the same for a LoRA (merged) output built on the saved model.

    python -m tests.trainer.zero3_worker --root R --sequences 5 --out o.json  (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT and TRAINKUBE_TOKENS_CACHE in the environment)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from tests.trainer.runs import pretrain_config
from trainkube.api.finetunejob import Lora
from trainkube.runconfig import ModelRef, Output, RunConfig
from trainkube_trainer import distributed
from trainkube_trainer.datasets_split import train_and_validation
from trainkube_trainer.distributed import DistEnv
from trainkube_trainer.engine import build
from trainkube_trainer.models import load_tokenizer
from trainkube_trainer.output import save_output
from trainkube_trainer.train import _validate

MICRO = 2  # 5 sequences on 2 ranks: rank 0 runs [0, 1] and [4], rank 1 [2, 3] and nothing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--sequences", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lora", action="store_true", help="also a LoRA fine-tune's output")
    args = parser.parse_args()
    env = distributed.start()
    config = pretrain_config(args.root, stage=3, ranks=env.world_size, steps=4)
    assert config.data is not None
    assert config.plan is not None
    # Every parameter partitioned (the plan keeps those under 100k elements whole, which is all
    # of the tiny model's): each forward pass all-gathers, as a real model's layers do, so a
    # rank with one batch fewer would leave the other waiting, and the save consolidates.
    config.plan.deepspeed["zero_optimization"]["stage3_param_persistence_threshold"] = 0
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
    written = save_output(config, built, env)
    lora = _lora_output(config, env, Path(written.get("model", "")), ids) if args.lora else {}
    if env.is_main:
        result = {
            **lora,
            "validationLoss": loss,
            "logits": logits[0, :8].tolist(),
            "written": written,
            "ids": ids.tolist(),
            "labels": labels.tolist(),
        }
        args.out.write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def _lora_output(config: RunConfig, env: DistEnv, base: Path, ids: torch.Tensor) -> dict[str, Any]:
    """LoRA on the saved model under ZeRO-3, with B drawn at random (it starts at zero), saved
    with merge: the engine's logits and what was written."""
    import deepspeed  # noqa: PLC0415

    base = Path(distributed.broadcast(str(base)))
    config = config.model_copy(
        update={
            "model": ModelRef(path=str(base)),
            "method": "lora",
            "lora": Lora(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
            "output": Output(directory=str(base.parent.parent / "lora-out"), merge=True),
        }
    )
    built = build(config, env, total_steps=4, universal=False)
    lora_b = [p for n, p in built.engine.module.named_parameters() if "lora_B" in n]
    with deepspeed.zero.GatheredParameters(lora_b, modifier_rank=0):
        if env.is_main:
            generator = torch.Generator().manual_seed(1)
            for param in lora_b:
                param.data.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    with torch.no_grad():
        logits = built.engine(input_ids=ids[:1]).logits
    written = save_output(config, built, env)
    return {"loraLogits": logits[0, :8].tolist(), "loraWritten": written}


if __name__ == "__main__":
    main()
