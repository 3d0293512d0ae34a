"""The trainer end to end on one NVIDIA GPU (issue 17, part 4): `python -m trainkube_trainer`
as a worker runs it, in bf16 on nccl, under ZeRO-2 and ZeRO-3, on the built-in corpus with the
tests' tiny Llama. For each stage: a straight run of 40 steps (validation, checkpoints at 20 and
40, the 16-bit output saved, under ZeRO-3 from DeepSpeed's consolidated state dict), and a run
that crashes after step 20 and is resumed from its checkpoint (model, optimizer, data position,
CPU and CUDA RNG). The outputs are loaded back with the trainer's own loading code, and the
resumed run's loss and output are compared with the straight run's. Results go to a JSON file.

Run it like check_gpu.py, from the repository root on a machine with one NVIDIA GPU:

    python -m tests.gpu.check_trainer --out results.json

It exits 0 when every run ended as it should and every output loaded, 1 otherwise, and 2
without a GPU. GPU kernels are not bit-for-bit deterministic, so the resumed run's difference
from the straight one is recorded, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.ports import free_port
from tests.trainer.runs import TINY, environment, pretrain_config, rank_environment
from trainkube.api.training import Precision, Training
from trainkube.exitcodes import ExitCode
from trainkube.planner import Overrides, PlanRequest, plan, shape_of
from trainkube.planner.memory import GiB
from trainkube.planner.plan import Optimizer
from trainkube.runconfig import Fault, RunConfig
from trainkube.runconfig import Plan as RunPlan

REPO = Path(__file__).resolve().parents[2]
STEPS = 40
SEQUENCE = 64
NO_GPU = "no CUDA GPU is visible (torch.cuda.is_available() is False): run this on a GPU machine"


def training() -> Training:
    return Training(
        max_steps=STEPS,
        global_batch_size=16,
        learning_rate=3e-3,
        warmup_steps=2,
        log_interval=5,
        precision=Precision.BF16,
    )


def gpu_plan(stage: int, *, fused_adam: bool) -> RunPlan:
    """The planner's plan for one 80 GiB GPU with the stage forced, micro-batch 4."""
    t = training()
    chosen = plan(
        PlanRequest(
            shape=shape_of(TINY),
            sequence_length=SEQUENCE,
            global_batch_size=t.global_batch_size,
            nodes=1,
            gpus_per_node=1,
            gpu_memory=80 * GiB,
            cpu_memory_per_node=64 * GiB,
            precision=Precision.BF16,
            overrides=Overrides(zero_stage=stage, micro_batch_size=4),
            optimizer=Optimizer(
                learning_rate=t.learning_rate,
                warmup_steps=t.warmup_steps,
                total_steps=STEPS,
                schedule=t.lr_schedule,
            ),
        )
    )
    ds = json.loads(json.dumps(chosen.deepspeed_config))
    if not fused_adam:
        ds["optimizer"]["params"]["torch_adam"] = True
    return RunPlan(
        deepspeed=ds,
        activation_checkpointing=chosen.activation_checkpointing,
        zero_stage=chosen.rung.stage,
    )


def run_config(root: Path, stage: int, *, fused_adam: bool, **changes: Any) -> RunConfig:
    """The tests' tiny pre-training run config, in bf16 with a one-GPU plan."""
    return pretrain_config(
        root,
        stage=stage,
        ranks=1,
        steps=STEPS,
        interval=20,
        training=training(),
        plan=gpu_plan(stage, fused_adam=fused_adam),
        **changes,
    )


def launch(config: RunConfig, root: Path, name: str) -> dict[str, Any]:
    """One attempt: the trainer as one rank, as a worker pod runs it; its result.json."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.json"
    path.write_text(config.dump())
    report = Path(config.reporting.directory)
    (report / "result.json").unlink(missing_ok=True)
    env = {
        **environment(),
        **rank_environment(0, 1, free_port()),
        "TRAINKUBE_TOKENS_CACHE": str(root.parent / "tokens"),
    }
    started = time.perf_counter()
    command = [sys.executable, "-m", "trainkube_trainer", "--config", str(path)]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=400, check=False
    )
    result_file = report / "result.json"
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
    keys = ("outcome", "step", "loss", "validationLoss", "error")
    return {
        "exitCode": done.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        **{key: result.get(key) for key in keys},
        "resumed": [line for line in done.stdout.splitlines() if '"resumed"' in line][:1],
        "logTail": (done.stdout + done.stderr)[-3000:] if done.returncode != 0 else "",
    }


def _output(directory: Path) -> dict[str, Any]:
    """The saved model, loaded back with the trainer's loading code: its dtype and logits."""
    import torch  # noqa: PLC0415

    from trainkube.runconfig import ModelRef  # noqa: PLC0415
    from trainkube_trainer.models import load_model, load_tokenizer  # noqa: PLC0415

    ref = ModelRef(path=str(directory))
    model = load_model(ref, tokenizer=load_tokenizer(ref), dtype=torch.float32)
    ids = torch.arange(1, 33).unsqueeze(0) % TINY.vocab_size
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    saved = json.loads((directory / "config.json").read_text())
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": model.config.num_hidden_layers,
        "savedDtype": saved.get("dtype", saved.get("torch_dtype")),
        "files": sorted(p.name for p in directory.iterdir()),
        "logits": logits[0, :2, :4].tolist(),
        "_tensor": logits,
    }


def check_stage(stage: int, root: Path, *, fused_adam: bool) -> dict[str, Any]:
    straight_root, resumed_root = root / f"zero{stage}-straight", root / f"zero{stage}-resumed"
    straight = launch(run_config(straight_root, stage, fused_adam=fused_adam), straight_root, "run")
    crashed = launch(
        run_config(resumed_root, stage, fused_adam=fused_adam, fault=Fault(crash_after_step=20)),
        resumed_root,
        "crash",
    )
    resumed = launch(run_config(resumed_root, stage, fused_adam=fused_adam), resumed_root, "resume")
    entry: dict[str, Any] = {
        "stage": stage,
        "straight": straight,
        "crashed": crashed,
        "resumed": resumed,
        "checkpoints": sorted(p.name for p in (resumed_root / "ckpt").glob("step-*")),
    }
    ok = (
        straight["exitCode"] == ExitCode.SUCCESS
        and crashed["exitCode"] == ExitCode.FAILED
        and resumed["exitCode"] == ExitCode.SUCCESS
        and resumed["step"] == STEPS
        and bool(resumed["resumed"])
    )
    if ok:
        a, b = _output(straight_root / "out" / "model"), _output(resumed_root / "out" / "model")
        difference = float((a.pop("_tensor") - b.pop("_tensor")).abs().max())
        entry.update(
            output=a,
            resumedOutput=b,
            lossDifference=abs(straight["loss"] - resumed["loss"]),
            outputLogitsMaxDifference=difference,
        )
    entry["ok"] = ok
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stages", nargs="+", type=int, choices=[2, 3], default=[2, 3])
    parser.add_argument("--fused-adam", action="store_true", help="DeepSpeed's FusedAdam")
    parser.add_argument("--out", type=Path, required=True, help="results file (JSON)")
    args = parser.parse_args(argv)
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "trainkube-gpu-trainer"
    shutil.rmtree(root, ignore_errors=True)  # a run left here would be resumed, not started
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_properties(0).name,
        "torch": torch.__version__,
        "steps": STEPS,
        "stages": [],
    }
    for stage in args.stages:
        results["stages"].append(check_stage(stage, root, fused_adam=args.fused_adam))
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["stages"][-1]), flush=True)
    return 0 if all(entry["ok"] for entry in results["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
