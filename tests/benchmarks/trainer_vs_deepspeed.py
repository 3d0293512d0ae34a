"""Benchmark: the trainer's tokens/s against a bare DeepSpeed script on the same run (issue 17,
P2): the tiny model, 2 CPU processes under the deepspeed launcher, ZeRO 0-3.

    flock /tmp/trainkube-bench.lock .venv/bin/python -m tests.benchmarks.trainer_vs_deepspeed \
        [--pairs 4] [--stages 0 1 2 3] [--steps 210] [--label after] [--trainer-root DIR] \
        [--control] [--calls]
    .venv/bin/python -m tests.benchmarks.trainer_vs_deepspeed --pool LABEL ... --label POOLED

Both sides get one run config (tests/trainer/runs.pretrain_config: 210 steps, a checkpoint and
the validation only at the end; progress every 10 steps, a job's default logInterval, and the
reports as a job sends them: progress.json at most every 5 s, the default
reporting.min_interval_seconds the operator leaves in place). The bare side
(bare_deepspeed_worker.py) builds its engine with the trainer's own engine.build, so
`deepspeed.initialize` gets the same model, DeepSpeed config and client optimizer; the
benchmark checks that the two sides' dumped configs and optimizer hyper-parameters are the
same, and that both reach the same loss at the last step (same data, same updates), and stops
when they are not. Every step is timed on rank 0 on both sides, from just before the first to
the end of the last: the bare side times them itself; the trainer's time is read from its
last progress line (tokensPerSecond is tokens since its first step / seconds since then). The
runs of a pair go one after the other, in turns (bare first in pairs 1, 3 ..., the trainer
first in pairs 2, 4 ...): on this VM the same run gets slower run after run (the bare side
alone: 39.3k, 36.9k, 35.6k, 34.7k tokens/s in four runs at ac25711), and with the bare side
always first that drift counted against the trainer. The ratio of each pair is trainer
tokens/s / bare tokens/s, and the stage's ratio is the median of its pairs.

Labels before session 13 timed steps 11-210 and had the trainer write its report at every
progress line (min_interval_seconds 0, about 30 times as often as a job at ZeRO-0): 0.75 ms
on rank 0 every 10 steps, a cost no job pays. They also carry `ratioMedianChunks` and
`ratioFastestChunks` (each run's median and fastest 10-step time instead of its total), which
need a progress line every 10 steps and are no longer measured.

`--control` puts the bare script on both sides of every pair (an A/A run): its ratios are
what this machine's noise alone gives, the yardstick for the trainer's. `--steps` makes every
run longer; on this VM that did not narrow the spread (a run's speed holds for the whole run),
more pairs do. Each stage's median ratio comes with its 95% confidence interval (`ratio95`,
from 6 pairs on). `--pool` runs nothing: it takes the pairs of runs already recorded together,
stage by stage (only runs of the same code, steps, timing, sides and machine), for a narrower
interval than any one run gives.

`--calls` runs both sides through engine_calls.py, which times every engine call (forward,
backward, step) on every rank: each pair keeps both sides' sums, and each stage the median
ratio of the measured side's CPU time to the bare side's per kind and rank, and the
difference of their shares of the run outside the calls (`callRatios`). It found the
trainer's batch reads (session 14), which the totals' spread hid.

`--trainer-root` runs another checkout's trainer package (for the numbers before a change):
both sides then import trainkube_trainer from there. Results go into
tests/benchmarks/results/trainer-vs-deepspeed.json under `--label`. Numbers, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tests.benchmarks import engine_calls
from tests.benchmarks.stats import median_interval
from tests.ports import free_port
from tests.trainer.runs import REPO, environment, pretrain_config, run
from trainkube.runconfig import Reporting, RunConfig

RESULTS = Path(__file__).resolve().parent / "results" / "trainer-vs-deepspeed.json"
STEPS = 210  # steps per run, all timed (--steps changes it)
LOG_INTERVAL = 10  # a job's default spec.training.logInterval
RANKS = 2
CALLS_MODULE = "tests.benchmarks.engine_calls"


def _config(root: Path, stage: int, steps: int) -> RunConfig:
    """The test runs' pre-training config with a job's defaults for progress: a loss check and
    progress every LOG_INTERVAL steps, the report written at most every min_interval_seconds."""
    config = pretrain_config(root, stage=stage, steps=steps, interval=steps)
    assert config.training is not None
    training = config.training.model_copy(update={"log_interval": LOG_INTERVAL})
    reporting = config.reporting.model_copy(
        update={"min_interval_seconds": Reporting.model_fields["min_interval_seconds"].default}
    )
    return config.model_copy(update={"training": training, "reporting": reporting})


def _environment(trainer_root: Path | None) -> dict[str, str]:
    """The trainer test runs' environment (tests/trainer/runs.run), with `trainer_root`'s
    trainer package first on the path when given."""
    env = environment()
    if trainer_root is not None:
        env["PYTHONPATH"] = f"{trainer_root / 'trainer'}:{REPO}"
    return env


def _through_calls(module: str, root: Path, calls: bool) -> tuple[str, dict[str, str]]:
    """The module to launch and the environment to add: `module` itself, or with `calls`,
    engine_calls running it with every engine call timed into `root`/calls.<rank>.json."""
    if not calls:
        return module, {}
    return CALLS_MODULE, {engine_calls.MODULE: module, engine_calls.OUT: str(root / "calls")}


def _bare(config: RunConfig, root: Path, trainer_root: Path | None, calls: bool) -> dict[str, Any]:
    """One bare run, launched as the trainer is (runs.run): rank 0's seconds of all its steps,
    its last loss and its engine (and with `calls`, every rank's engine calls)."""
    root.mkdir(parents=True, exist_ok=True)
    path, out = root / "bare.json", root / "bare-out.json"
    path.write_text(config.dump())
    module, extra = _through_calls("tests.benchmarks.bare_deepspeed_worker", root, calls)
    command = [
        str(Path(sys.executable).parent / "deepspeed"),
        f"--num_gpus={RANKS}",
        f"--master_port={free_port()}",
        "--module",
        module,
        "--config",
        str(path),
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command,
        env={**_environment(trainer_root), **extra},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"the bare run failed:\n{(done.stdout + done.stderr)[-3000:]}")
    dump = json.loads(out.read_text())
    return {
        "seconds": dump["seconds"],
        "loss": dump["loss"],
        "engine": {"deepspeed": dump["deepspeed"], "optimizer": dump["optimizer"]},
        **({"calls": engine_calls.read(root / "calls", RANKS)} if calls else {}),
    }


def _lines(log: str, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and f'"event": "{event}"' in line
    ]


def _tokens(config: RunConfig) -> int:
    """The tokens a run of `config` trains on, over all its steps and ranks."""
    assert config.training is not None
    assert config.data is not None
    assert config.plan is not None
    batch = int(config.plan.deepspeed["train_batch_size"])
    return config.training.max_steps * batch * config.data.sequence_length


def _trainer(config: RunConfig, root: Path, calls: bool) -> dict[str, Any]:
    """One trainer run: seconds of all its steps from its last progress line at the last step,
    its last loss, and its engine line (None where the trainer does not log one); with
    `calls`, every rank's engine calls."""
    module, extra = _through_calls("trainkube_trainer", root, calls)
    outcome = run(config, root, module=module, extra_env=extra)
    assert config.training is not None
    steps = config.training.max_steps
    if outcome.exit_code != 0:
        raise SystemExit(f"the trainer run failed:\n{outcome.log[-3000:]}")
    rate = [
        line["tokensPerSecond"]
        for line in _lines(outcome.log, "progress")
        if line.get("step") == steps and "tokensPerSecond" in line
    ]
    engine = _lines(outcome.log, "engine")
    return {
        "seconds": _tokens(config) / rate[-1],
        "loss": outcome.result["loss"],
        "engine": engine[0] if engine else None,
        **({"calls": engine_calls.read(root / "calls", RANKS)} if calls else {}),
    }


def _same_setup(base: dict[str, Any], measured: dict[str, Any], stage: int) -> str:
    """Stop unless both runs built the same engine and trained the same steps."""
    engine = measured["engine"]
    if engine is not None:
        for key in ("deepspeed", "optimizer"):
            if engine[key] != base["engine"][key]:
                raise SystemExit(
                    f"ZeRO {stage}: the two sides' {key} differ:\n"
                    f"measured {json.dumps(engine[key], sort_keys=True)}\n"
                    f"bare     {json.dumps(base['engine'][key], sort_keys=True)}"
                )
    if abs(measured["loss"] - base["loss"]) > 1e-4:
        raise SystemExit(
            f"ZeRO {stage}: the last loss differs: measured {measured['loss']}, bare {base['loss']}"
        )
    return "identical" if engine is not None else "not logged by this trainer; last loss equal"


def _pair(
    stage: int, pair: int, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    """One pair's runs, in turns (see the module's docstring): the bare script's, and the
    trainer's (with --control, the bare script's again); how their set-up was checked; and the
    tokens each run trained on."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _config(root, stage, args.steps)

        def base() -> dict[str, Any]:
            return _bare(config, root / "bare", args.trainer_root, args.calls)

        def measured() -> dict[str, Any]:
            if args.control:
                return _bare(config, root / "bare-again", args.trainer_root, args.calls)
            return _trainer(config, root, args.calls)

        if pair % 2 == 0:
            first = base()
            second = measured()
        else:
            second = measured()
            first = base()
        return first, second, _same_setup(first, second, stage), _tokens(config)


def _interval(ratios: list[float]) -> list[float] | None:
    """The 95% confidence interval of the median ratio (None under 6 pairs)."""
    interval = median_interval(ratios)
    return None if interval is None else [round(bound, 4) for bound in interval]


def _stage(stage: int, pairs: list[dict[str, Any]], checked: str) -> dict[str, Any]:
    """A stage's row: the median of its pairs' ratios and that median's 95% interval."""
    return {
        "zeroStage": stage,
        "ratio": round(statistics.median(p["ratio"] for p in pairs), 4),
        "ratio95": _interval([p["ratio"] for p in pairs]),
        "engineCheck": checked,
        "pairs": pairs,
    }


def _measure(args: argparse.Namespace, side: str) -> list[dict[str, Any]]:
    """Run `args.pairs` pairs at each of `args.stages`; the stages' rows."""
    stages = []
    for stage in args.stages:
        pairs, checked = [], ""
        for pair in range(args.pairs):
            bare, measured, checked, tokens = _pair(stage, pair, args)
            pairs.append(
                {
                    "bareTokensPerSecond": round(tokens / bare["seconds"], 1),
                    f"{side}TokensPerSecond": round(tokens / measured["seconds"], 1),
                    "ratio": round(bare["seconds"] / measured["seconds"], 4),
                    "lastLoss": measured["loss"],
                    "first": "bare" if pair % 2 == 0 else side,
                }
            )
            print(json.dumps({"zeroStage": stage, "pair": pair + 1, **pairs[-1]}), flush=True)
            if args.calls:
                pairs[-1]["calls"] = {"bare": bare["calls"], side: measured["calls"]}
        stages.append(_stage(stage, pairs, checked))
        if args.calls:
            stages[-1]["callRatios"] = engine_calls.ratios(pairs, side)
    return stages


SAME_RUN = ("commit", "steps", "timed", "control", "calls", "torch", "deepspeed", "machine")


def _pool(results: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """The runs under `labels` taken together: each stage's pairs from all of them. The runs
    must agree on what was measured (SAME_RUN: the same code, steps, timing, sides and
    machine), else this stops and says where they differ."""
    runs = [results[label] for label in labels]
    for key in SAME_RUN:
        values = {json.dumps(entry.get(key)) for entry in runs}
        if len(values) > 1:
            raise SystemExit(f"--pool: the runs differ in {key}: {sorted(values)}")
    stages = []
    for stage in sorted({row["zeroStage"] for entry in runs for row in entry["stages"]}):
        rows = [row for entry in runs for row in entry["stages"] if row["zeroStage"] == stage]
        pairs = [pair for row in rows for pair in row["pairs"]]
        stages.append(_stage(stage, pairs, rows[0]["engineCheck"]))
    pooled = {key: runs[0][key] for key in SAME_RUN if key in runs[0]}
    return {**pooled, "pooled": labels, "stages": stages}


def _record(label: str, report: dict[str, Any]) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["what"] = (
        f"tokens/s of the trainer / a bare DeepSpeed script, tiny llama, {RANKS} CPU processes "
        f"(gloo, OMP_NUM_THREADS=1), global batch 16 = micro-batch 4 x {RANKS} ranks x 2 "
        "accumulation, sequences of 64 tokens, fp32, `timed` on rank 0 (where a label has no "
        "`timed`: steps 11 to the last, `steps` or 210, with the trainer writing its report "
        "every 10 steps); ratio: median over pairs run in turns (bare first, then trainer "
        "first); ratio95: its 95% confidence interval; `pooled`: the pairs of those labels "
        "taken together"
    )
    results[label] = report
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def _show(label: str, report: dict[str, Any]) -> None:
    side = "bareAgain" if report.get("control") else "trainer"
    print(f"{label} (commit {report['commit']}, {len(report['stages'][0]['pairs'])} pairs)")
    print(f"{'stage':>5} {'ratio':>7} {'95% interval':>13}  pairs (bare / {side} tok/s)")
    for row in report["stages"]:
        raw = ", ".join(
            f"{p['bareTokensPerSecond']:.0f}/{p[f'{side}TokensPerSecond']:.0f}"
            for p in row["pairs"]
        )
        interval = row["ratio95"]
        within = "-" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"
        print(f"{row['zeroStage']:>5} {row['ratio']:>7.3f} {within:>13}  {raw}")
        if "callRatios" in row:
            print(
                f"      CPU time {side}/bare per rank, outside-share difference: "
                f"{json.dumps(row['callRatios'])}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--label", default="after")
    parser.add_argument("--trainer-root", type=Path, default=None)
    parser.add_argument("--note", default=None, help="what this trainer is, for the results")
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per run")
    parser.add_argument(
        "--control",
        action="store_true",
        help="run the bare script on both sides of each pair (the measurement's own spread)",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="time every engine call on every rank of both sides (engine_calls.py)",
    )
    parser.add_argument(
        "--pool",
        nargs="+",
        metavar="LABEL",
        help="run nothing: take these labels' pairs together, stage by stage, as --label",
    )
    args = parser.parse_args()
    if args.pool:
        results = json.loads(RESULTS.read_text())
        missing = [label for label in args.pool if label not in results]
        if missing:
            parser.error(f"--pool: no results under {missing}")
        report = {**({"note": args.note} if args.note else {}), **_pool(results, args.pool)}
        _record(args.label, report)
        _show(args.label, report)
        return
    side = "bareAgain" if args.control else "trainer"
    if args.trainer_root is not None:
        os.environ["PYTHONPATH"] = _environment(args.trainer_root)["PYTHONPATH"]
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    stages = _measure(args, side)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=args.trainer_root or REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import deepspeed  # noqa: PLC0415

    report = {
        "commit": commit,
        **({"note": args.note} if args.note else {}),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "steps": args.steps,
        "timed": "every step on rank 0, from just before the first to the end of the last; the "
        "trainer reporting as a job does (progress.json at most every 5 s)",
        **({"control": "the bare script on both sides"} if args.control else {}),
        **({"calls": "every engine call timed (engine_calls.py)"} if args.calls else {}),
        "stages": stages,
    }
    _record(args.label, report)
    _show(args.label, report)


if __name__ == "__main__":
    main()
