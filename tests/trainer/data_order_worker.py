"""One rank of a data-order run: prepares the data the way the trainer does (local rank 0 writes
the cache, the others wait at a barrier), then writes the token ids of its samples for global
batches [--first, --end) to --out as JSON: {"batch,micro-step,rank": [[ids...], ...]}.

    python -m tests.trainer.data_order_worker --first 6 --end 12 --out o.json  (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, TRAINKUBE_TOKENS_CACHE in the environment)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch.distributed as dist

from trainkube.api.data import BuiltinCorpus
from trainkube.runconfig import DataRef, ModelRef
from trainkube_trainer.data.feed import Feed
from trainkube_trainer.data.sampler import BatchSampler
from trainkube_trainer.datasets_split import train_and_validation
from trainkube_trainer.tokenizer import byte_tokenizer

GLOBAL_BATCH = 16
SEED = 11
DATA = DataRef(builtin=BuiltinCorpus.TINY_STORIES, sequence_length=64, validation_fraction=0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--end", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    train, _ = train_and_validation(
        DATA,
        byte_tokenizer(),
        seed=SEED,
        model=ModelRef(),
        local_main=int(os.environ.get("LOCAL_RANK", rank)) == 0,
        barrier=dist.barrier,
    )
    sampler = BatchSampler(
        examples=len(train),
        global_batch_size=GLOBAL_BATCH,
        micro_batch_size=8 // world,
        ranks=world,
        seed=SEED,
    )
    out: dict[str, list[list[int]]] = {"batchesPerEpoch": [[sampler.batches_per_epoch]]}
    feed = Feed(sampler, train, rank)  # what the trainer reads its batches through
    for batch in range(args.first, args.end):
        for k, (ids, _) in enumerate(feed.micro_batches(batch)):
            out[f"{batch},{k},{rank}"] = ids.tolist()
    args.out.write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
