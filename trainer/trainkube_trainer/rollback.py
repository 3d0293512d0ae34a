"""In-process rollback: on divergence the running ranks go back to an earlier checkpoint
themselves, instead of exiting for the operator to restart the pods from it.

Every rank already holds the same verdict (each rank's own detector saw the same all-reduced
losses; train.py). Then, all ranks together: find the checkpoint by the operator's own rule
(`rollback_target`: the newest valid one at least `stepsBack` steps before the spike;
`newest_valid` verifies it; every checkpoint was saved at a loss check that found no divergence,
so none is of the diverged step or a later one), move the checkpoints after it aside as a
pod-restart rollback does (`lineage.abandon_after`), load it into the live DeepSpeed engine, and
agree that every rank did (an all-gather on a gloo group with a timeout, so a rank that does not
answer fails the agreement instead of blocking it). Only then does any rank change its run: the
learning rate times `lrFactor`, the batches after the checkpoint skipped (the sampler is
deterministic, so skipping is leaving out batch indexes), a fresh spike detector on every rank.
Rank 0 reports the rollback (in progress.json's `rollbacks`, which the operator records into
status.rollbacks once each, and as an event).

When any part fails, or the run may not roll back here (no budget left, no checkpoint early
enough, ZeRO stage 3, a checkpoint of another world size), `roll_back` says so and the caller
exits with the divergence code: the operator then restarts the pods from the checkpoint, as it
always did.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from trainkube.api.recovery import latest_rollback_step, skipped_batches
from trainkube.runconfig import InProcessRollback
from trainkube_trainer import lineage
from trainkube_trainer.checkpoints import Checkpoint
from trainkube_trainer.divergence import DivergenceDetector, Verdict
from trainkube_trainer.reporting import log, now

if TYPE_CHECKING:
    from trainkube_trainer.train import Session


def agreement_group(policy: InProcessRollback | None) -> Any:
    """The gloo group the ranks agree through (collective: every rank calls it at start-up),
    with the policy's timeout; None without in-process rollback."""
    if policy is None:
        return None
    timeout = timedelta(seconds=policy.timeout_seconds)
    return torch.distributed.new_group(backend="gloo", timeout=timeout)


def _all_agree(ok: bool, group: Any) -> bool:
    """True when every rank says ok; False when one does not, or does not answer in time."""
    values: list[Any] = [None] * torch.distributed.get_world_size()
    try:
        torch.distributed.all_gather_object(values, ok, group=group)
    except RuntimeError as error:  # a timeout, or a rank that went away
        log("rollback-agreement-failed", error=str(error))
        return False
    return all(v is True for v in values)


def _refusal(session: Session, policy: InProcessRollback) -> str | None:
    """Why this run may not roll back in place (the same answer on every rank), or None."""
    if session.manager is None:
        return "the job has no checkpoints"
    if policy.rollbacks_left <= 0:
        return "no rollback of maxRollbacks is left"
    plan = session.config.plan
    if plan is not None and plan.zero_stage == 3:
        return "ZeRO stage 3 cannot load a checkpoint into a live engine"
    return None


def _lower_learning_rate(session: Session, factor: float) -> float:
    """Multiply the schedule's learning rates by `factor` from the loaded step on; the new
    learning rate."""
    built = session.built
    scheduler = built.scheduler
    if scheduler is None:
        for group in built.engine.optimizer.param_groups:
            group["lr"] *= factor
        return float(built.engine.optimizer.param_groups[0]["lr"])
    # DeepSpeed's WarmupLR and WarmupDecayLR keep min/max/delta, WarmupCosineLR org_lrs.
    for name in ("min_lrs", "max_lrs", "delta_lrs", "org_lrs"):
        if hasattr(scheduler, name):
            setattr(scheduler, name, [lr * factor for lr in getattr(scheduler, name)])
    scheduler.step(scheduler.last_batch_iteration)  # the same step again, at the lower rate
    return float(scheduler.get_last_lr()[0])


def _load(session: Session, target: Checkpoint, number: int) -> tuple[dict[str, Any], list[int]]:
    """Quarantine the checkpoints after `target` (collective) and load it into the engine."""
    manager, config, env = session.manager, session.config, session.env
    assert manager is not None
    moved = lineage.abandon_after(
        manager.published(), target.step, attempt=config.attempt, rank=env.rank, rollback=number
    )
    info = manager.load(session.built.engine, target, universal=False)
    return info, moved


def roll_back(session: Session, verdict: Verdict, group: Any) -> bool:
    """Roll the running ranks back after `verdict` (collective); False when the pods must
    restart instead (the caller then exits as diverged)."""
    policy = session.config.rollback
    if policy is None:
        return False
    refusal = _refusal(session, policy)
    if refusal is not None:
        log("rollback-in-process-refused", step=verdict.step, reason=refusal)
        return False
    started = time.monotonic()
    reporter, manager = session.reporter, session.manager
    assert manager is not None
    reporter.phase("rollingBack")
    number = session.rollbacks + 1
    latest = latest_rollback_step(diverged_at=verdict.step, steps_back=policy.steps_back)
    target: Checkpoint | None = None
    try:
        if _all_agree(True, group):
            target, skipped = manager.newest_valid(at_most=latest)
            for step, why in skipped:
                reporter.event("checkpointSkipped", step=step, reason=why)
    except RuntimeError as error:
        log("rollback-in-process-failed", rank=session.env.rank, error=str(error))
        return False
    if target is None:
        log("rollback-in-process-refused", step=verdict.step, reason=f"no checkpoint <= {latest}")
        return False
    if target.manifest.get("worldSize") != session.env.world_size:
        log("rollback-in-process-refused", step=verdict.step, reason="another world size")
        return False
    ok, info, moved = True, dict[str, Any](), list[int]()
    loading = time.monotonic()
    try:
        info, moved = _load(session, target, number)
    except Exception as error:  # a checkpoint that does not load: the pods restart instead
        log("rollback-in-process-failed", rank=session.env.rank, error=repr(error))
        ok = False
    if not _all_agree(ok, group):
        return False
    loaded = time.monotonic() - loading
    _continue_from(session, verdict, target, info, moved, started, loaded)
    return True


def _continue_from(
    session: Session,
    verdict: Verdict,
    target: Checkpoint,
    info: dict[str, Any],
    moved: list[int],
    started: float,
    load_seconds: float,
) -> None:
    """Every rank loaded `target`: train on from it, slower and past the batches that led to
    the spike, and report the rollback."""
    policy, config, reporter = session.config.rollback, session.config, session.reporter
    assert policy is not None
    session.rollbacks += 1
    session.step, session.position = int(info["step"]), int(info["dataPosition"])
    factor = config.recovery.lr_factor * policy.lr_factor
    learning_rate = _lower_learning_rate(session, policy.lr_factor)
    skipped = skipped_batches(session.position, policy.skip_batches)
    skips = [*config.recovery.skip_batches, *([skipped] if skipped else [])]
    fault = config.fault
    session.config = config.model_copy(
        update={
            "recovery": config.recovery.model_copy(
                update={"lr_factor": factor, "skip_batches": skips}
            ),
            "rollback": policy.model_copy(update={"rollbacks_left": policy.rollbacks_left - 1}),
            # An injected spike or NaN has "passed" once rolled back (as after a pod restart).
            "fault": fault.model_copy(update={"spike_at_step": None, "nan_at_step": None})
            if fault
            else None,
        }
    )
    if config.divergence is not None:
        session.detector = DivergenceDetector(config.divergence)
    if moved:
        reporter.event(
            "checkpointsAbandoned",
            steps=moved,
            reason=f"attempt {config.attempt} rolled back in place to step {target.step}",
        )
    record = {
        "number": session.rollbacks,
        "detectedAtStep": verdict.step,
        "loss": verdict.loss,
        "rule": verdict.rule,
        "fromCheckpointStep": target.step,
        "learningRate": learning_rate,
        "learningRateFactor": factor,
        "skippedBatches": policy.skip_batches,
        "skipped": list(skipped) if skipped else None,
        "time": now(),
    }
    seconds = round(time.monotonic() - started, 3)
    reporter.progress(
        force=True,
        step=session.step,
        learningRate=learning_rate,
        dataPosition=session.position,
        rollbacks=[*reporter.state.get("rollbacks", []), record],
    )
    reporter.event(
        "rolledBack",
        seconds=seconds,
        loadSeconds=round(load_seconds, 3),
        at=round(time.time(), 3),
        **record,
    )
    reporter.phase("training")
