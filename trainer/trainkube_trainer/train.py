"""The one training loop: pre-training and fine-tuning (full or LoRA) alike.

setup -> resume -> loop (batch, micro-steps, step, divergence check, report, evaluate,
checkpoint) -> save the output. Rank 0 alone reports, tracks and publishes; every rank decides
to stop from the same broadcast verdict, so a divergence ends all ranks at the same step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from trainkube.runconfig import RunConfig
from trainkube_trainer import tracking
from trainkube_trainer.checkpoints import Checkpoint, CheckpointManager
from trainkube_trainer.data.sampler import BatchSampler, next_batch_index
from trainkube_trainer.datasets_split import Sequences, train_and_validation
from trainkube_trainer.distributed import DistEnv, broadcast, mean_over_ranks
from trainkube_trainer.divergence import DivergenceDetector
from trainkube_trainer.engine import Built, build
from trainkube_trainer.exitcodes import Diverged, ExitCode
from trainkube_trainer.models import load_tokenizer
from trainkube_trainer.reporting import Reporter

VALIDATION_SEQUENCES = 256  # validation uses at most this many held-out sequences


def _total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    training = config.training
    assert training is not None
    if training.max_steps:
        return training.max_steps
    assert training.epochs is not None
    return max(1, math.ceil(training.epochs * batches_per_epoch))


def _resume_target(config: RunConfig, manager: CheckpointManager | None, env: DistEnv) -> Any:
    if manager is None or config.checkpoints is None or not config.checkpoints.resume:
        return None, []
    found: tuple[Checkpoint | None, list[str]] = (None, [])
    if env.is_main:
        found = manager.newest_valid(at_most=config.checkpoints.resume_step)
    return broadcast(found)


def _validate(built: Built, validation: Sequences, env: DistEnv, micro: int) -> float:
    engine = built.engine
    count = min(len(validation), VALIDATION_SEQUENCES)
    if count == 0:
        return float("nan")
    total, tokens = 0.0, 0.0
    engine.eval()
    with torch.no_grad():
        for start in range(env.rank * micro, count, env.world_size * micro):
            ids = validation.ids[start : start + micro].to(engine.device)
            labels = validation.labels[start : start + micro].to(engine.device)
            n = float((labels[:, 1:] != -100).sum())
            total += float(engine(input_ids=ids, labels=labels).loss) * n
            tokens += n
    engine.train()
    return mean_over_ranks(total, tokens, engine.device)


def _poison(ids: torch.Tensor, vocab: int, step: int) -> torch.Tensor:
    """A batch of random tokens: a real loss spike, for fault injection."""
    generator = torch.Generator().manual_seed(step)
    return torch.randint(0, vocab, ids.shape, generator=generator)


def _save_output(config: RunConfig, built: Built, env: DistEnv) -> dict[str, str]:
    """Write the model (or adapter, and optionally the merged model) to the output folder."""
    import deepspeed  # noqa: PLC0415

    if config.output is None:
        return {}
    out = Path(config.output.directory)
    model = built.engine.module
    zero3 = built.ds_config.get("zero_optimization", {}).get("stage") == 3
    params = list(model.parameters())
    written: dict[str, str] = {}
    gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero3 else None
    if gathered:
        gathered.__enter__()
    try:
        if env.is_main:
            if config.method == "lora":
                model.save_pretrained(out / "adapter")
                built.tokenizer.save_pretrained(out / "adapter")
                written["adapter"] = str(out / "adapter")
                if config.output.merge:
                    merged = model.merge_and_unload()
                    merged.save_pretrained(out / "model")
                    built.tokenizer.save_pretrained(out / "model")
                    written["model"] = str(out / "model")
            else:
                model.save_pretrained(out / "model")
                built.tokenizer.save_pretrained(out / "model")
                written["model"] = str(out / "model")
    finally:
        if gathered:
            gathered.__exit__(None, None, None)
    torch.distributed.barrier()
    return written


def run(config: RunConfig, env: DistEnv, reporter: Reporter) -> ExitCode:
    assert config.training is not None and config.data is not None and config.plan is not None
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    train, validation = train_and_validation(
        config.data, tokenizer, seed=config.seed, model=config.model
    )
    ds = config.plan.deepspeed
    micro, global_batch = ds["train_micro_batch_size_per_gpu"], ds["train_batch_size"]
    sampler = BatchSampler(
        examples=len(train),
        global_batch_size=global_batch,
        micro_batch_size=micro,
        ranks=env.world_size,
        seed=config.seed,
    )
    total_steps = _total_steps(config, sampler.batches_per_epoch)
    policy = config.checkpoints
    manager = (
        CheckpointManager(
            Path(policy.directory),
            rank=env.rank,
            keep_last=policy.keep_last,
            keep_every=policy.keep_every,
        )
        if policy
        else None
    )
    target, skipped = _resume_target(config, manager, env)
    for why in skipped:
        reporter.event("checkpointSkipped", reason=why)
    universal = target is not None and target.manifest.get("worldSize") != env.world_size
    if universal and manager is not None:
        manager.prepare_universal(target)
    built = build(config, env, total_steps=total_steps, universal=universal)
    engine = built.engine

    step, position = 0, 0
    if target is not None and manager is not None:
        info = manager.load(engine, target, universal=universal)
        step, position = int(info["step"]), int(info["dataPosition"])
        reporter.event("resumed", step=step, fromCheckpoint=target.path.name, universal=universal)
    detector = DivergenceDetector(config.divergence) if config.divergence else None
    tracker = tracking.start(config, env)
    fault = config.fault
    fault_active = fault is not None and not (fault.only_first_attempt and config.recovery.lr_factor < 1)
    tokens_per_step = global_batch * config.data.sequence_length
    reporter.progress(force=True, step=step, totalSteps=total_steps, phase="training")
    started, started_step = time.monotonic(), step

    while step < total_steps:
        position = next_batch_index(position, config.recovery.skip_batches)
        loss_total = 0.0
        for indexes in sampler.micro_batches(position, env.rank):
            ids, labels = train.ids[indexes], train.labels[indexes]
            if fault_active and fault and fault.spike_at_step is not None and step + 1 >= fault.spike_at_step:
                ids = _poison(ids, len(tokenizer), step)
                labels = ids.clone()
            out = engine(input_ids=ids.to(engine.device), labels=labels.to(engine.device))
            loss = out.loss
            if fault_active and fault and fault.nan_at_step == step + 1:
                loss = loss * float("nan")
            engine.backward(loss)
            engine.step()
            loss_total += float(loss.detach())
        step += 1
        position += 1
        loss_value = mean_over_ranks(loss_total, sampler.accumulation, engine.device)

        verdict = detector.observe(step, loss_value) if detector and env.is_main else None
        verdict = broadcast(verdict)
        if verdict is not None:
            reporter.event("diverged", step=verdict.step, loss=verdict.loss, rule=verdict.rule)
            tracking.log(tracker, {"diverged_at": verdict.step, "loss": verdict.loss}, step)
            raise Diverged(verdict.step, verdict.loss, verdict.rule)

        elapsed = time.monotonic() - started
        rate = (step - started_step) * tokens_per_step / elapsed if elapsed > 0 else 0.0
        lr = float(built.scheduler.get_last_lr()[0]) if built.scheduler else float("nan")
        eta = (total_steps - step) * elapsed / max(step - started_step, 1)
        fields = {
            "step": step,
            "totalSteps": total_steps,
            "loss": round(loss_value, 5),
            "learningRate": lr,
            "tokensPerSecond": round(rate, 1),
            "etaSeconds": round(eta, 1),
            "dataPosition": position,
        }
        if step % config.training.log_interval == 0 or step == total_steps:
            reporter.progress(**fields)
            tracking.log(tracker, {"loss": loss_value, "lr": lr, "tokens_per_s": rate}, step)
        interval = config.training.eval_interval
        if (interval and step % interval == 0) or step == total_steps:
            val = _validate(built, validation, env, micro)
            reporter.progress(force=True, validationLoss=round(val, 5), **fields)
            tracking.log(tracker, {"validation_loss": val}, step)
        if manager and policy and (step % policy.interval == 0 or step == total_steps):
            manifest = manager.save(
                engine,
                step=step,
                info={
                    "step": step,
                    "loss": loss_value,
                    "dataPosition": position,
                    "worldSize": env.world_size,
                    "zeroStage": config.plan.zero_stage,
                    "learningRate": lr,
                    "attempt": config.attempt,
                },
            )
            if manifest:
                reporter.event(
                    "checkpoint",
                    step=step,
                    loss=round(loss_value, 5),
                    path=f"step-{step}",
                    bytes=manifest["bytes"],
                    seconds=manifest["seconds"],
                )

    written = _save_output(config, built, env)
    reporter.progress(force=True, phase="done", output=written)
    tracking.finish(tracker)
    return ExitCode.SUCCESS
