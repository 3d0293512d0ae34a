"""Benchmark: the tiny model on the CPU, 2 worker processes, ZeRO 0-3 (and stage 3 with
offload): tokens per second, checkpoint size and save time, wall time of the whole run.

    .venv/bin/python -m tests.benchmarks.trainer_cpu [--steps 60]

Prints a table and writes tests/benchmarks/results/trainer-cpu.json. Numbers, not assertions:
they move with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from tests.trainer.runs import pretrain_config, run

RESULTS = Path(__file__).resolve().parent / "results" / "trainer-cpu.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    rows = []
    for stage in (0, 1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            started = time.monotonic()
            outcome = run(
                pretrain_config(root, stage=stage, steps=args.steps, interval=args.steps), root
            )
            wall = time.monotonic() - started
            if outcome.exit_code != 0:
                raise SystemExit(f"stage {stage} failed:\n{outcome.log[-2000:]}")
            checkpoint = next(
                json.loads(line)
                for line in outcome.log.splitlines()
                if line.startswith("{") and '"event": "checkpoint"' in line
            )
            rows.append(
                {
                    "zeroStage": stage,
                    "tokensPerSecond": outcome.result["tokensPerSecond"],
                    "finalLoss": outcome.result["loss"],
                    "checkpointBytes": checkpoint["bytes"],
                    "checkpointSeconds": checkpoint["seconds"],
                    "wallSeconds": round(wall, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "what": f"tiny llama (164,544 parameters), 2 CPU processes, micro-batch 4 x 2 x 2 = 16 "
        f"sequences of 64 tokens, {args.steps} steps, fp32",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads per process "
        "(OMP_NUM_THREADS=1 in workers)",
        "torch": torch.__version__,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'stage':>5} {'tokens/s':>10} {'ckpt bytes':>11} {'ckpt s':>7} {'wall s':>7}")
    for row in rows:
        print(
            f"{row['zeroStage']:>5} {row['tokensPerSecond']:>10.0f} {row['checkpointBytes']:>11}"
            f" {row['checkpointSeconds']:>7.3f} {row['wallSeconds']:>7.1f}"
        )


if __name__ == "__main__":
    main()
