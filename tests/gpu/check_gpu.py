"""The GPU check (issue 17, part 6): bf16 training of a ~110M-parameter Llama built from a
config (no downloads, random tokens) through the trainer's own engine (`engine.build`: the
plan's DeepSpeed config, precision and backend from `distributed.device_choice`) under ZeRO-2
and ZeRO-3, a few dozen steps per configuration; for each, the planner's predicted peak memory
per GPU against `torch.cuda.max_memory_allocated`, and tokens/s. It also checks that the
checkpoint RNG state holds and restores the CUDA generator. Results go to a JSON file.

Run it on a machine with one NVIDIA GPU, from the repository root, with Python packages that
have a CUDA build of torch: either the GPU trainer image (images/trainer.Containerfile with
ACCELERATOR=cuda; DeepSpeed's fused_adam is compiled in it) with the repository copied or
mounted in, or a venv made like `make setup` but with PyPI's (CUDA) torch 2.13.0:

    python -m tests.gpu.check_gpu                      # 4 configurations, 30 steps each
    python -m tests.gpu.check_gpu --fused-adam         # FusedAdam, as the trainer's GPU plans
    python -m tests.gpu.check_gpu --steps 40 --configs z2-mb4 z3-mb4 --out results.json

First run on an NVIDIA H200 on 2026-11-28 (results/gpu-check-h200-*.json): about 3 minutes for
the four configurations, most of it process start-up and model builds.
Each configuration runs in its own process (a fresh CUDA context and peak counter). The
planner's figure includes 1 GiB of CUDA context that `max_memory_allocated` does not see: the
results give both. By default the optimizer is torch's AdamW (`torch_adam`), which needs no
compiled DeepSpeed op; `--fused-adam` uses FusedAdam as the trainer does (pre-built in the
GPU image, else compiled at first use, which needs nvcc).
Without a GPU the script exits with status 2 and says so.

DeepSpeed 0.19.8 cannot parse architecture variants such as `9.0a` in TORCH_CUDA_ARCH_LIST
when it compiles FusedAdam ("invalid literal for int() with base 10: '0a'", deepspeedai/DeepSpeed
PR #8619); the image that lent the H200 sets exactly that. With `--fused-adam` the children get
the list without variant suffixes (`9.0a` builds as `9.0`), and the results record both lists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_port
from tests.trainer.runs import rank_environment
from trainkube.api.model import Architecture
from trainkube.api.training import Precision, Training
from trainkube.planner import Overrides, PlanRequest, plan, shape_of
from trainkube.planner.memory import GiB
from trainkube.planner.plan import CONTEXT_BYTES, Plan
from trainkube.runconfig import ModelRef, Reporting, RunConfig, Task
from trainkube.runconfig import Plan as RunPlan

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = Architecture(layers=12, hidden_size=768, heads=12, vocab_size=16384, context_length=1024)
NO_GPU = "no CUDA GPU is visible (torch.cuda.is_available() is False): run this on a GPU machine"


@dataclass(frozen=True)
class Configuration:
    name: str
    stage: int
    micro_batch: int
    sequence: int
    checkpointing: bool


CONFIGURATIONS = [
    Configuration("z2-mb4", stage=2, micro_batch=4, sequence=1024, checkpointing=False),
    Configuration("z2-mb8-ckpt", stage=2, micro_batch=8, sequence=1024, checkpointing=True),
    Configuration("z3-mb4", stage=3, micro_batch=4, sequence=1024, checkpointing=False),
    Configuration("z3-mb8-ckpt", stage=3, micro_batch=8, sequence=1024, checkpointing=True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    names = [c.name for c in CONFIGURATIONS]
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed for tokens/s")
    parser.add_argument("--configs", nargs="+", choices=names, default=names)
    parser.add_argument("--fused-adam", action="store_true", help="DeepSpeed's FusedAdam")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="default: the GPU's")
    parser.add_argument("--out", type=Path, default=None, help="results file (JSON)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child's configuration
    args = parser.parse_args(argv)
    if args.warmup >= args.steps:
        parser.error(f"--warmup {args.warmup} must be below --steps {args.steps}")
    return args


def planned(configuration: Configuration, *, gpu_memory: int) -> Plan:
    """The planner's plan for one GPU with the configuration's stage, micro-batch and
    activation checkpointing fixed (nothing offloaded)."""
    return plan(
        PlanRequest(
            shape=shape_of(MODEL),
            sequence_length=configuration.sequence,
            global_batch_size=configuration.micro_batch,
            nodes=1,
            gpus_per_node=1,
            gpu_memory=gpu_memory,
            cpu_memory_per_node=64 * GiB,
            precision=Precision.BF16,
            overrides=Overrides(
                zero_stage=configuration.stage,
                micro_batch_size=configuration.micro_batch,
                activation_checkpointing=configuration.checkpointing,
            ),
        )
    )


def run_config(
    configuration: Configuration, chosen: Plan, *, steps: int, fused_adam: bool, root: Path
) -> RunConfig:
    """The trainer's run config for one configuration (the engine is built from it)."""
    ds = json.loads(json.dumps(chosen.deepspeed_config))
    if not fused_adam:
        ds["optimizer"]["params"]["torch_adam"] = True
    return RunConfig(
        task=Task.PRETRAIN,
        job="tests/gpu-check",
        model=ModelRef(architecture=MODEL),
        training=Training(
            max_steps=steps,
            global_batch_size=configuration.micro_batch,
            learning_rate=3e-4,
            precision=Precision.BF16,
        ),
        plan=RunPlan(
            deepspeed=ds,
            activation_checkpointing=chosen.activation_checkpointing,
            zero_stage=chosen.rung.stage,
        ),
        reporting=Reporting(directory=str(root / "report")),
    )


def _measure(configuration: Configuration, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: build the trainer's engine, train, measure."""
    import torch  # noqa: PLC0415

    from trainkube_trainer import distributed  # noqa: PLC0415
    from trainkube_trainer.engine import build  # noqa: PLC0415

    env = distributed.start()
    gpu_memory = _gpu_memory(args)
    chosen = planned(configuration, gpu_memory=gpu_memory)
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "trainkube-gpu-check"
    config = run_config(
        configuration, chosen, steps=args.steps, fused_adam=args.fused_adam, root=root
    )
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    built = build(config, env, total_steps=args.steps, universal=False)
    engine = built.engine
    shape = (configuration.micro_batch, configuration.sequence)
    generator = torch.Generator(device=engine.device).manual_seed(0)
    losses: list[float] = []
    started = 0.0
    for step in range(args.steps):
        if step == args.warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
        ids = torch.randint(0, MODEL.vocab_size, shape, device=engine.device, generator=generator)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    timed = args.steps - args.warmup
    measured = torch.cuda.max_memory_allocated()
    predicted = chosen.gpu_total
    return {
        **asdict(configuration),
        "dtype": str(built.dtype),
        "precisionKeys": [k for k in ("bf16", "fp16") if built.ds_config.get(k, {}).get("enabled")],
        "optimizer": "FusedAdam" if args.fused_adam else "torch AdamW",
        "parameters": chosen.parameters,
        "steps": args.steps,
        "firstLoss": losses[0],
        "lastLoss": losses[-1],
        "tokensPerSecond": round(
            timed * configuration.micro_batch * configuration.sequence / seconds, 1
        ),
        "secondsPerStep": round(seconds / timed, 4),
        "plannedBytes": predicted,
        "plannedBytesWithoutContext": predicted - CONTEXT_BYTES,
        "plannedStates": chosen.states.gpu_total,
        "plannedActivations": chosen.activation_bytes,
        "maxMemoryAllocated": measured,
        "maxMemoryReserved": torch.cuda.max_memory_reserved(),
        "measuredOverPlannedWithoutContext": round(measured / (predicted - CONTEXT_BYTES), 3),
    }


def _gpu_memory(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    if args.gpu_memory_gib is not None:
        return int(args.gpu_memory_gib * GiB)
    return int(torch.cuda.get_device_properties(0).total_memory)


def without_variants(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST with architecture variant suffixes dropped (`9.0a` becomes `9.0`,
    `+PTX` is kept), duplicates removed, in order; the separators may be `;`, `,` or spaces."""
    kept: list[str] = []
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if not entry:
            continue
        arch, plus, ptx = entry.partition("+")
        cleaned = arch.rstrip("abcdefghijklmnopqrstuvwxyz") + plus + ptx
        if cleaned not in kept:
            kept.append(cleaned)
    return ";".join(kept)


def built_arch_list(fused_adam: bool) -> str | None:
    """The TORCH_CUDA_ARCH_LIST the children compile FusedAdam with, where it differs from
    this process's: the list without variant suffixes (None without --fused-adam or a list)."""
    given = os.environ.get("TORCH_CUDA_ARCH_LIST")
    return without_variants(given) if fused_adam and given is not None else None


def _child(name: str, args: argparse.Namespace, part: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        **rank_environment(0, 1, free_port()),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if (arch_list := built_arch_list(args.fused_adam)) is not None:
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    command = [sys.executable, "-m", "tests.gpu.check_gpu", "--one", name, "--out", str(part)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.fused_adam:
        command.append("--fused-adam")
    if args.gpu_memory_gib is not None:
        command += ["--gpu-memory-gib", str(args.gpu_memory_gib)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not part.exists():
        return {"name": name, "error": (done.stdout + done.stderr)[-4000:]}
    result: dict[str, Any] = json.loads(part.read_text())
    return result


def _rng_check() -> dict[str, Any]:
    """The checkpoint RNG state holds the CUDA generators and restores them."""
    import torch  # noqa: PLC0415

    from trainkube_trainer.distributed import restore_rng_state, rng_state  # noqa: PLC0415

    state = rng_state()
    expected = torch.rand(4, device="cuda")
    restore_rng_state(state)
    again = torch.rand(4, device="cuda")
    return {"holdsCuda": "cuda" in state, "restoresCuda": bool(torch.equal(expected, again))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    by_name = {c.name: c for c in CONFIGURATIONS}
    if args.one:
        args.out.write_text(json.dumps(_measure(by_name[args.one], args)))
        return 0
    from trainkube_trainer.distributed import this_device  # noqa: PLC0415

    properties = torch.cuda.get_device_properties(0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS / f"gpu-check-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "gpu": properties.name,
        "gpuMemory": properties.total_memory,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "deviceChoice": asdict(this_device(Precision.BF16)),
        "optimizer": "FusedAdam" if args.fused_adam else "torch AdamW",
        "torchCudaArchList": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "torchCudaArchListBuilt": built_arch_list(args.fused_adam),
        "model": MODEL.model_dump(by_alias=True),
        "rng": _rng_check(),
        "configurations": [],
    }
    for name in args.configs:
        part = out.with_name(f".{out.stem}-{name}.json")
        results["configurations"].append(_child(name, args, part))
        part.unlink(missing_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # kept as it grows
        print(json.dumps(results["configurations"][-1]), flush=True)
    failed = [c["name"] for c in results["configurations"] if "error" in c]
    print(f"results: {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
