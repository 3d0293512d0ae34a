"""The checkpoint lineage after a rollback: the checkpoints written after the step a rollback
goes back to belong to a timeline that diverged. Before training resumes, rank 0 moves them
into `abandoned/attempt-N/` beside the checkpoints (a rename: nothing is deleted), so no later
resume can land in that timeline, retention never keeps one of them in place of a checkpoint of
the current timeline, and the new timeline may write the same step numbers again. A rollback the
running ranks make in place (`rollback.py`) does the same, into `abandoned/attempt-N-rollback-K/`
for its K-th one: the same step may be abandoned more than once in one attempt."""

from __future__ import annotations

import os
from pathlib import Path

from trainkube_trainer.distributed import broadcast

ABANDONED = "abandoned"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def abandon_after(
    published: list[tuple[int, Path]],
    step: int,
    *,
    attempt: int,
    rank: int,
    rollback: int | None = None,
) -> list[int]:
    """Move every published checkpoint after `step` aside (rank 0); every rank learns which.
    Collective: all ranks call it. `rollback`: the number of an in-process rollback."""
    moved: list[int] = []
    folder = f"attempt-{attempt}" if rollback is None else f"attempt-{attempt}-rollback-{rollback}"
    if rank == 0:
        for found, path in published:
            if found <= step:
                continue
            target = path.parent / ABANDONED / folder
            target.mkdir(parents=True, exist_ok=True)
            os.replace(path, target / path.name)
            moved.append(found)
        if moved:
            _fsync_dir(target)
            _fsync_dir(published[0][1].parent)
    result: list[int] = broadcast(moved if rank == 0 else None)
    return result
