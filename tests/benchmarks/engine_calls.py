"""The DeepSpeed engine's calls timed inside a rank of a benchmark run (trainer_vs_deepspeed
--calls): which of forward, backward and step, or the work between them, makes one side slower.

Whole-run tokens/s on this VM moves by up to 5% from one run to the next; a share of the run
or a ratio of CPU times within the same pair sees a 2% difference the totals cannot. Run by the
deepspeed launcher in place of the worker module, as

    TRAINKUBE_CALLS_MODULE=trainkube_trainer TRAINKUBE_CALLS_OUT=/dir/calls \
        deepspeed --num_gpus=2 --module tests.benchmarks.engine_calls --config run.json

it wraps `DeepSpeedEngine.forward`, `backward` and `step`, runs the module as `__main__`, and
when the process ends (both workers end through `exit_now`, which runs the exit handlers)
writes /dir/calls.<rank>.json: per kind of call (forward passes with gradients only, not
validation's), the wall and CPU seconds of this thread (user + system,
`getrusage(RUSAGE_THREAD)`) and its minor page faults, over the calls after the first WARMUP
of each kind; and `wall`, the seconds from the first forward to the end of the last step, of
which `outside` were spent outside the three calls (the warm-up calls count in both).
Numbers for a benchmark's results, never assertions.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

KINDS = ("forward", "backward", "step")
WARMUP = 20  # calls of each kind left out of the sums (the first steps are slow)
MODULE, OUT = "TRAINKUBE_CALLS_MODULE", "TRAINKUBE_CALLS_OUT"


def summary(calls: dict[str, list[tuple[float, float, int]]], wall: float) -> dict[str, Any]:
    """Each kind's sums of (wall s, CPU s, minor faults) over its calls after WARMUP; the
    run's wall seconds and those outside every call (all calls counted there)."""
    inside = sum(call[0] for kind in KINDS for call in calls[kind])
    return {
        **{
            kind: {
                "calls": len(calls[kind][WARMUP:]),
                "wall": round(sum(c[0] for c in calls[kind][WARMUP:]), 4),
                "cpu": round(sum(c[1] for c in calls[kind][WARMUP:]), 4),
                "minorFaults": sum(c[2] for c in calls[kind][WARMUP:]),
            }
            for kind in KINDS
        },
        "wall": round(wall, 4),
        "outside": round(wall - inside, 4),
    }


def read(out: Path, ranks: int) -> list[dict[str, Any]]:
    """Every rank's summary of one run (`out` as given in TRAINKUBE_CALLS_OUT)."""
    return [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(ranks)]


def ratios(pairs: list[dict[str, Any]], side: str) -> dict[str, list[float]]:
    """Over pairs whose `calls` hold both sides' summaries: per kind and rank, the median of
    `side`'s CPU seconds / the bare side's; for `outside`, the median difference of the two
    sides' share of the run spent outside the calls (side - bare), per rank."""
    result: dict[str, list[float]] = {}
    ranks = range(len(pairs[0]["calls"]["bare"]))
    for kind in KINDS:
        result[kind] = [
            round(
                statistics.median(
                    p["calls"][side][r][kind]["cpu"] / p["calls"]["bare"][r][kind]["cpu"]
                    for p in pairs
                ),
                4,
            )
            for r in ranks
        ]

    def share(run: dict[str, Any]) -> float:
        return float(run["outside"]) / float(run["wall"])

    result["outside"] = [
        round(
            statistics.median(
                share(p["calls"][side][r]) - share(p["calls"]["bare"][r]) for p in pairs
            ),
            4,
        )
        for r in ranks
    ]
    return result


def _install(out: Path) -> None:
    import torch  # noqa: PLC0415
    from deepspeed.runtime.engine import DeepSpeedEngine  # noqa: PLC0415

    calls: dict[str, list[tuple[float, float, int]]] = {kind: [] for kind in KINDS}
    marks: dict[str, float] = {}

    def timed(kind: str) -> None:
        call = getattr(DeepSpeedEngine, kind)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():  # validation's forward passes: not training
                return call(self, *args, **kwargs)
            before = resource.getrusage(resource.RUSAGE_THREAD)
            started = time.perf_counter()
            marks.setdefault("first", started)
            result = call(self, *args, **kwargs)
            ended = time.perf_counter()
            after = resource.getrusage(resource.RUSAGE_THREAD)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            calls[kind].append((ended - started, cpu, after.ru_minflt - before.ru_minflt))
            if kind == "step":
                marks["last"] = ended
            return result

        setattr(DeepSpeedEngine, kind, wrapper)

    for kind in KINDS:
        timed(kind)

    def write() -> None:
        if "last" in marks:
            rank = os.environ.get("RANK", "0")
            report = summary(calls, marks["last"] - marks["first"])
            Path(f"{out}.{rank}.json").write_text(json.dumps({"rank": int(rank), **report}))

    atexit.register(write)


def main() -> None:
    module, out = os.environ[MODULE], Path(os.environ[OUT])
    _install(out)
    sys.argv = [module, *sys.argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
