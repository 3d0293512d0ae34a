"""One rank of the loss-reduction test: starts the trainer's distributed environment, sums
rank-dependent loss totals with `means_over_ranks` and writes to --out as JSON the means it
got, whether it took DeepSpeed's shared-memory path and whether DeepSpeed's op was there.

    python -m tests.trainer.reduce_worker --out o.json  (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT, and LOCAL_SIZE for the shared-memory path, in the environment)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from trainkube_trainer import distributed
from trainkube_trainer.exitcodes import exit_now

COUNT = 2.0  # micro-batches per step on every rank


def totals(rank: int) -> list[torch.Tensor]:
    """This rank's loss totals of three steps, as the training loop keeps them."""
    return [torch.tensor(value, dtype=torch.float64) for value in (1.5 + rank, 3.25 * rank, 7.0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    env = distributed.start()
    means = [distributed.means_over_ranks(totals(env.rank), COUNT) for _ in range(3)]
    args.out.with_name(f"{args.out.stem}-{env.rank}.json").write_text(
        json.dumps(
            {
                "means": means,
                "shared": distributed.shared_memory_reduce(torch.device("cpu"), os.environ),
                "op": hasattr(torch.ops, "deepspeed")
                and hasattr(torch.ops.deepspeed, "inference_all_reduce_"),
            }
        )
    )
    distributed.finish()


if __name__ == "__main__":
    main()
    exit_now(0)
