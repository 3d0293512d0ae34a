"""Goodput (pure): the share of the wall time since a job first started that went into training
steps it kept, and where the rest went, from the attempts, checkpoints and progress in status.

- scheduling: each attempt's start until its last worker ran (`workers_started`);
- start-up: from there to its first step (loading the model, resuming a checkpoint);
- checkpointing: the save time of every checkpoint the trainer reported;
- recomputation: after a restart, the steps between the checkpoint it resumed from and the
  last step the attempt before it reached, and after an in-process rollback the steps between
  its checkpoint and the spike, at the run's mean step time;
- restarts: from an attempt's end to the next one's start (back-off, deleting the old gang);
- suspended: time suspended.
What is left is productive. The ETA is the remaining steps at the mean step time.
"""

from __future__ import annotations

import itertools

from trainkube import timestamps
from trainkube.api.status import Attempt, Goodput, JobStatus, LostTime


def _span(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return max(0.0, timestamps.epoch(end) - timestamps.epoch(start))


def _recomputed_steps(attempts: list[Attempt]) -> int:
    steps = 0
    for before, after in itertools.pairwise(attempts):
        if before.last_step is not None:
            steps += max(0, before.last_step - (after.resumed_from_step or 0))
    return steps


def _rolled_back_steps(status: JobStatus) -> int:
    """Steps the workers trained again after rolling back in place."""
    return sum(
        max(0, r.detected_at_step - r.from_checkpoint_step)
        for r in status.rollbacks
        if r.in_process
    )


def _lost(status: JobStatus, end: str, step_seconds: float | None) -> LostTime:
    attempts = list(status.attempts)
    scheduling = startup = 0.0
    for attempt in attempts:
        until = attempt.end_time or end
        scheduling += _span(attempt.start_time, attempt.workers_started or until)
        if attempt.workers_started:
            startup += _span(attempt.workers_started, attempt.first_step_time or until)
    gaps = sum(_span(a.end_time, b.start_time) for a, b in itertools.pairwise(attempts))
    return LostTime(
        scheduling=round(scheduling),
        startup=round(startup),
        checkpointing=round(sum(c.seconds or 0.0 for c in status.checkpoints)),
        recomputation=round(
            (_recomputed_steps(attempts) + _rolled_back_steps(status)) * (step_seconds or 0.0)
        ),
        restarts=round(gaps),
        suspended=status.suspended_seconds or 0,
    )


def compute(status: JobStatus, now: str, step_seconds: float | None) -> Goodput | None:
    """Goodput of a job that has started; None before its first start."""
    if not status.start_time or not status.attempts or not now:
        return None
    end = status.completion_time or now
    wall = _span(status.start_time, end)
    lost = _lost(status, end, step_seconds)
    spent = sum(lost.model_dump().values())
    productive = max(0.0, wall - spent)
    eta = None
    progress = status.progress
    if step_seconds and progress and progress.total_steps and not status.completion_time:
        left = max(0, progress.total_steps - progress.step) * step_seconds
        eta = timestamps.later(now, left)
    return Goodput(
        ratio=f"{100 * productive / wall:.1f}%" if wall > 0 else "0.0%",
        productive_seconds=round(productive),
        wall_seconds=round(wall),
        lost=lost,
        eta=eta,
    )
