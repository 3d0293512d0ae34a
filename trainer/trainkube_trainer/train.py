"""The one training loop: pre-training and fine-tuning (full or LoRA) alike.

setup -> resume -> loop (batch, micro-steps, step; at a loss check: divergence check, report,
evaluate, checkpoint) -> save the output. Rank 0 alone reports, tracks and publishes.

The losses are checked in batches, not every step: each step's loss stays on the device, and
the pending steps' losses are all-reduced together (one collective, one copy to the host) every
LOSS_CHECK_STEPS steps and before anything acts on them: a progress report, validation, a
checkpoint, an auto-interval plan, the end of training. Every rank then runs its own divergence
detector over those steps in order, on the same numbers, so all ranks name the same diverged
step and stop (or roll back) together with no message between them. A divergence is found up to
LOSS_CHECK_STEPS - 1 steps after its step: that is lost work, never a saved checkpoint (every
checkpoint is taken at a clean check, before the diverged step), and the in-process rollback
picks its checkpoint by the diverged step as before.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainkube.exitcodes import ExitCode
from trainkube.runconfig import RunConfig
from trainkube_trainer import lineage, rollback, tracking
from trainkube_trainer.checkpoints import Checkpoint, CheckpointManager
from trainkube_trainer.data.feed import Feed
from trainkube_trainer.data.sampler import BatchSampler, next_batch_index
from trainkube_trainer.datasets_split import Sequences, train_and_validation
from trainkube_trainer.distributed import DistEnv, broadcast, mean_over_ranks, means_over_ranks
from trainkube_trainer.divergence import DivergenceDetector
from trainkube_trainer.engine import Built, build
from trainkube_trainer.exitcodes import DivergedError
from trainkube_trainer.interval import Schedule
from trainkube_trainer.models import load_tokenizer
from trainkube_trainer.output import save_output
from trainkube_trainer.reporting import Reporter, log

VALIDATION_SEQUENCES = 256  # validation uses at most this many held-out sequences
LOSS_CHECK_STEPS = 10  # the losses are checked at least this often (see the docstring)


def _total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    training = config.training
    assert training is not None
    if training.max_steps:
        return training.max_steps
    assert training.epochs is not None
    return max(1, math.ceil(training.epochs * batches_per_epoch))


def _resume_target(
    config: RunConfig, manager: CheckpointManager | None
) -> tuple[Checkpoint | None, list[tuple[int, str]]]:
    if manager is None or config.checkpoints is None or not config.checkpoints.resume:
        return None, []
    # Collective: every rank verifies its share of each candidate's files.
    return manager.newest_valid(at_most=config.checkpoints.resume_step)


def validation_batches(count: int, *, rank: int, ranks: int, micro: int) -> list[range]:
    """Rank `rank`'s validation batches over sequences [0, count): batch i of every rank covers
    the i-th run of `ranks * micro` sequences, `micro` each. Every rank gets the same number of
    batches (under ZeRO-3 each forward pass is a collective all-gather, so a rank with one
    batch fewer would leave the others waiting forever); a batch past the end is empty."""
    per_round = ranks * micro
    rounds = -(-count // per_round)
    return [
        range(
            min(i * per_round + rank * micro, count), min(i * per_round + (rank + 1) * micro, count)
        )
        for i in range(rounds)
    ]


def _validate(built: Built, validation: Sequences, env: DistEnv, micro: int) -> float:
    """The mean loss per predicted token over the first VALIDATION_SEQUENCES held-out sequences,
    the same on any rank count. A rank whose batch is empty runs the first sequences and counts
    nothing, so every rank runs the same forward passes."""
    engine = built.engine
    count = min(len(validation), VALIDATION_SEQUENCES)
    if count == 0:
        return float("nan")
    total, tokens = 0.0, 0.0
    engine.eval()
    with torch.no_grad():
        for batch in validation_batches(count, rank=env.rank, ranks=env.world_size, micro=micro):
            ids, labels = validation.batch(batch or range(min(micro, count)))
            ids, labels = ids.to(engine.device), labels.to(engine.device)
            loss = engine(input_ids=ids, labels=labels).loss
            n = float((labels[:, 1:] != -100).sum())
            if batch and n:  # the mean over no tokens is nan: such a batch adds nothing
                total += float(loss) * n
                tokens += n
    engine.train()
    return mean_over_ranks(total, tokens, engine.device)


def _poison(ids: torch.Tensor, vocab: int, step: int) -> torch.Tensor:
    """A batch of random tokens: a real loss spike, for fault injection."""
    generator = torch.Generator().manual_seed(step)
    return torch.randint(0, vocab, ids.shape, generator=generator)


def engine_record(built: Built) -> dict[str, Any]:
    """What `deepspeed.initialize` was given, for the log: the DeepSpeed config and the client
    optimizer (the trainer's own on the CPU) with its hyper-parameters."""
    optimizer = built.engine.client_optimizer
    group = optimizer.param_groups[0] if optimizer is not None else {}
    return {
        "deepspeed": built.ds_config,
        "optimizer": {
            "class": type(optimizer).__name__,
            **{key: value for key, value in group.items() if key != "params"},
        }
        if optimizer is not None
        else None,
    }


@dataclass
class Session:
    """Everything one attempt holds while it trains."""

    config: RunConfig
    env: DistEnv
    reporter: Reporter
    built: Built
    train: Sequences
    validation: Sequences
    sampler: BatchSampler
    feed: Feed  # this rank's micro-batches of `train` in the sampler's order
    manager: CheckpointManager | None
    total_steps: int
    detector: DivergenceDetector | None
    tracker: Any
    vocab: int
    fault_active: bool
    step: int = 0
    position: int = 0
    rollbacks: int = 0  # in-process rollbacks so far in this attempt
    agreement: Any = None  # the ranks' group for agreeing on one (rollback.agreement_group)


def _setup(config: RunConfig, env: DistEnv, reporter: Reporter) -> Session:
    assert config.training is not None
    assert config.data is not None
    assert config.plan is not None
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    train, validation = train_and_validation(
        config.data,
        tokenizer,
        seed=config.seed,
        model=config.model,
        local_main=env.local_rank == 0,  # prepares the data when the job names no tokens
        barrier=torch.distributed.barrier,
    )
    ds = config.plan.deepspeed
    sampler = BatchSampler(
        examples=len(train),
        global_batch_size=ds["train_batch_size"],
        micro_batch_size=ds["train_micro_batch_size_per_gpu"],
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
    policy_ = config.checkpoints
    if manager is not None and policy_ is not None and policy_.abandon_after is not None:
        # A rollback: the checkpoints after its step are of the abandoned timeline.
        moved = lineage.abandon_after(
            manager.published(), policy_.abandon_after, attempt=config.attempt, rank=env.rank
        )
        if moved:
            reporter.event(
                "checkpointsAbandoned",
                steps=moved,
                reason=f"attempt {config.attempt} rolled back to step {policy_.abandon_after}",
            )
    target, skipped = _resume_target(config, manager)
    for step, why in skipped:
        reporter.event("checkpointSkipped", step=step, reason=why)
    universal = target is not None and target.manifest.get("worldSize") != env.world_size
    if universal and manager is not None and target is not None:
        manager.prepare_universal(target)
    built = build(config, env, total_steps=total_steps, universal=universal)
    if env.is_main:
        log("engine", **engine_record(built))
    fault = config.fault
    session = Session(
        config=config,
        env=env,
        reporter=reporter,
        built=built,
        train=train,
        validation=validation,
        sampler=sampler,
        feed=Feed(sampler, train, env.rank),
        manager=manager,
        total_steps=total_steps,
        detector=DivergenceDetector(config.divergence) if config.divergence else None,
        tracker=tracking.start(config, env),
        vocab=len(tokenizer),
        # A rollback (learning rate lowered) means the fault has "passed".
        fault_active=fault is not None
        and not (fault.only_first_attempt and config.recovery.lr_factor < 1),
        agreement=rollback.agreement_group(config.rollback),
    )
    if target is not None and manager is not None:
        info = manager.load(built.engine, target, universal=universal)
        session.step, session.position = int(info["step"]), int(info["dataPosition"])
        reporter.event(
            "resumed",
            step=session.step,
            fromCheckpoint=target.path.name,
            universal=universal,
            at=round(time.time(), 3),
        )
    return session


def _train_step(session: Session) -> torch.Tensor:
    """One optimizer step (all micro-batches); this rank's sum of their losses, on the device
    (reading it on the host would wait for the device at every micro-batch)."""
    config, engine, fault = session.config, session.built.engine, session.config.fault
    session.position = next_batch_index(session.position, config.recovery.skip_batches)
    target_step = session.step + 1
    loss_total = torch.zeros((), dtype=torch.float64, device=engine.device)
    for batch in session.feed.micro_batches(session.position):
        ids, labels = batch
        if session.fault_active and fault and fault.hang_at_step == target_step:
            _hang_if_chosen(session, fault.hang_rank)
        spike = fault.spike_at_step if session.fault_active and fault else None
        if spike is not None and target_step >= spike:
            ids = _poison(ids, session.vocab, target_step)
            labels = ids.clone()
        loss = engine(input_ids=ids.to(engine.device), labels=labels.to(engine.device)).loss
        if session.fault_active and fault and fault.nan_at_step == target_step:
            loss = loss * float("nan")
        engine.backward(loss)
        engine.step()
        loss_total += loss.detach()
    session.step, session.position = target_step, session.position + 1
    return loss_total


def _hang_if_chosen(session: Session, rank: int) -> None:
    """The injected hang: the chosen rank blocks forever; the others then wait for it in the
    next collective, as they would for a rank stuck in a driver or a dead NIC."""
    world = session.env.world_size
    if session.env.rank == rank % world:
        log("fault-hang", rank=session.env.rank, step=session.step + 1)
        while True:
            time.sleep(3600)


def loss_check_due(
    step: int, *, total: int, log_interval: int, eval_interval: int, checkpoint: bool
) -> bool:
    """Whether `step` checks the pending losses: every LOSS_CHECK_STEPS steps, and before a
    progress report, a validation, a checkpoint or an auto-interval plan (`checkpoint`), and
    at the end."""
    return (
        step % LOSS_CHECK_STEPS == 0
        or step % log_interval == 0
        or (eval_interval > 0 and step % eval_interval == 0)
        or checkpoint
        or step == total
    )


def _check_divergence(session: Session, losses: list[float]) -> bool:
    """Whether the run diverged in one of the last len(losses) steps, and rolled back in place
    (it goes on from the checkpoint). Every rank observes the same losses in its own detector."""
    detector = session.detector
    first = session.step - len(losses) + 1
    verdict = detector.observe_steps(enumerate(losses, start=first)) if detector else None
    if verdict is None:
        return False
    at = round(time.time(), 3)
    session.reporter.event(
        "diverged", step=verdict.step, loss=verdict.loss, rule=verdict.rule, at=at
    )
    tracking.log(session.tracker, {"diverged_at": verdict.step}, session.step)
    # In place when it can (spec.rollback.inProcess); else the operator restarts the pods.
    if not rollback.roll_back(session, verdict, session.agreement):
        raise DivergedError(verdict.step, verdict.loss, verdict.rule)
    return True


def _checkpoint_when_due(
    session: Session, schedule: Schedule, loss: float, lr: float, step_seconds: float, first: int
) -> None:
    """Save when the schedule says so; with interval auto, plan the next save (rank 0 decides,
    every rank adopts) after the probe steps and after every save."""
    step, total, reporter = session.step, session.total_steps, session.reporter
    saved: float | None = None
    if schedule.due(step, total):
        reporter.phase("checkpointing")
        saved = _checkpoint(session, loss, lr)
        reporter.phase("training")
    if schedule.auto and (schedule.needs_plan(step, first) or schedule.due(step, total)):
        choice = schedule.plan(step, step_seconds, saved) if session.env.is_main else None
        steps = broadcast(choice.steps if choice else None)
        schedule.adopt(step, steps)
        if choice is not None:
            reporter.progress(force=True, checkpointInterval=choice.report())


def _checkpoint(session: Session, loss: float, lr: float) -> float | None:
    """Save a checkpoint; on rank 0, how long the save took."""
    config, step = session.config, session.step
    assert config.plan is not None
    if session.manager is None:
        return None
    manifest = session.manager.save(
        session.built.engine,
        step=step,
        info={
            "step": step,
            "loss": loss,
            "dataPosition": session.position,
            "worldSize": session.env.world_size,
            "zeroStage": config.plan.zero_stage,
            "learningRate": lr,
            "attempt": config.attempt,
        },
    )
    if manifest:
        session.reporter.event(
            "checkpoint",
            step=step,
            loss=round(loss, 5),
            path=f"step-{step}",
            bytes=manifest["bytes"],
            seconds=manifest["seconds"],
            kept=manifest["kept"],
            dataPosition=session.position,
        )
        return float(manifest["seconds"])
    return None


def _act_on_checked_loss(
    session: Session, schedule: Schedule | None, loss: float, started: float, started_step: int
) -> None:
    """What a loss check allows at this step: report (every log_interval), validate (every
    eval_interval), checkpoint (when the schedule says so), each after the steps up to here
    were found not to diverge. `loss` is this step's."""
    config, built, reporter = session.config, session.built, session.reporter
    assert config.training is not None
    assert config.data is not None
    step, total = session.step, session.total_steps
    elapsed = time.monotonic() - started
    done = step - started_step
    tokens_per_step = session.sampler.global_batch_size * config.data.sequence_length
    rate = done * tokens_per_step / elapsed if elapsed > 0 else 0.0
    lr = float(built.scheduler.get_last_lr()[0]) if built.scheduler else float("nan")
    fields: dict[str, Any] = {
        "step": step,
        "totalSteps": total,
        "loss": round(loss, 5),
        "learningRate": lr,
        "tokensPerSecond": round(rate, 1),
        "etaSeconds": round((total - step) * elapsed / max(done, 1), 1),
        "dataPosition": session.position,
    }
    if step % config.training.log_interval == 0 or step == total:
        reporter.progress(**fields)
        tracking.log(session.tracker, {"loss": loss, "lr": lr, "tokens_per_s": rate}, step)
    interval = config.training.eval_interval
    if (interval and step % interval == 0) or step == total:
        micro = session.sampler.micro_batch_size
        reporter.phase("validating")
        val = _validate(built, session.validation, session.env, micro)
        reporter.phase("training")
        reporter.progress(force=True, validationLoss=round(val, 5), **fields)
        tracking.log(session.tracker, {"validation_loss": val}, step)
    if schedule is not None:
        _checkpoint_when_due(session, schedule, loss, lr, elapsed / max(done, 1), started_step)


def _freeze_setup_objects() -> None:
    """Take what the set-up made (about 440,000 objects with torch, transformers, DeepSpeed and
    the model, none of which dies before the run ends) out of the garbage collector's sight. A
    full collection walking them all stalls this rank for about 0.2 s (rank 0 met one every
    210 steps of the tiny model on the CPU), and every other rank waits for it at the next
    collective; frozen, the collector looks only at what the loop allocates."""
    gc.collect()
    gc.freeze()


def run(config: RunConfig, env: DistEnv, reporter: Reporter) -> ExitCode:
    session = _setup(config, env, reporter)
    _freeze_setup_objects()
    training = config.training
    assert training is not None
    built, total = session.built, session.total_steps
    reporter.progress(force=True, step=session.step, totalSteps=total, phase="training")
    started, started_step = time.monotonic(), session.step
    heartbeat = reporter.start_heartbeat(config.reporting.heartbeat_seconds)
    policy = config.checkpoints
    schedule = Schedule(policy.interval, policy.auto_mtbf_seconds) if policy else None

    pending: list[torch.Tensor] = []  # this rank's loss sums of the steps not checked yet
    while session.step < total:
        began = time.monotonic()
        pending.append(_train_step(session))
        reporter.stepped(session.step, time.monotonic() - began)
        step = session.step
        planning = schedule is not None and (
            schedule.due(step, total) or schedule.needs_plan(step, started_step)
        )
        if loss_check_due(
            step,
            total=total,
            log_interval=training.log_interval,
            eval_interval=training.eval_interval,
            checkpoint=planning,
        ):
            losses = means_over_ranks(pending, session.sampler.accumulation)
            pending.clear()
            if _check_divergence(session, losses):
                continue  # rolled back: the loop goes on from the checkpoint's step
            _act_on_checked_loss(session, schedule, losses[-1], started, started_step)
        fault = config.fault
        if session.fault_active and fault and fault.crash_after_step == step:
            raise RuntimeError(f"injected crash after step {step} (run config fault)")

    reporter.phase("saving")
    written = save_output(config, built, env)
    heartbeat.set()
    reporter.progress(force=True, phase="done", output=written)
    tracking.finish(session.tracker)
    return ExitCode.SUCCESS
