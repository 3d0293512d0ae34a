"""Checkpoints: `step-N` folders on the shared volume, published atomically and durably, with a
manifest of checksums that every rank helps to write and to verify.

Saving (every rank): DeepSpeed writes the shards into `.step-N.partial`; each rank hashes the
files it writes while writing them and fsyncs them and their folders (`shards`), then sends
its digests to rank 0. Rank 0 checks that the ranks' files are exactly the folder's, writes
`manifest.json` (step, loss, data position, world size, plan; name, sha256, size and writer
of every file), fsyncs it and the folder, renames the folder to `step-N` and fsyncs the parent
(`durable`). So a half-written checkpoint never looks like one, and a published one survives a
crash of the machine. Retention keeps the newest `keep_last` and every `keep_every`-th step.

Resuming (every rank): rank 0 lists the checkpoints and reads each manifest, newest first;
each rank checks its share of the files against it (`manifest.assigned`: its own files, or a
round-robin split when the world size changed), and all ranks gather every rank's verdict, so
they agree: the first checkpoint no rank faults is used, the others are reported and skipped.
A checkpoint written by a different number of ranks is converted to DeepSpeed's universal
format once (`ds_universal/` inside it) and loaded from that.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainkube_trainer.digests import FileDigest, write_hashed
from trainkube_trainer.distributed import broadcast, restore_rng_state, rng_state
from trainkube_trainer.durable import Durable
from trainkube_trainer.manifest import (
    UNIVERSAL_TAG,
    UnaccountedFilesError,
    account,
    assigned,
    check,
    listing,
    read_manifest,
    verify,
    write_manifest,
)
from trainkube_trainer.reporting import log
from trainkube_trainer.shards import hash_and_sync, recording, written_outside_engine

__all__ = ["Checkpoint", "CheckpointManager", "retained", "verify", "write_manifest"]

TAG = "ds"
STEP = re.compile(r"^step-(\d+)$")
LEFTOVER = re.compile(r"^\.step-\d+\.(partial|replaced)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    manifest: dict[str, Any]


def _gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    values: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def retained(steps: list[int], *, keep_last: int, keep_every: int) -> set[int]:
    """The steps retention keeps: the newest `keep_last`, and every multiple of `keep_every`."""
    keep = set(sorted(steps)[-keep_last:]) if keep_last else set()
    if keep_every:
        keep |= {s for s in steps if s % keep_every == 0}
    return keep


class CheckpointManager:
    """Saves, finds and loads checkpoints of one job's DeepSpeed engine (all ranks call each
    method: they are collective)."""

    def __init__(
        self,
        directory: Path,
        *,
        rank: int,
        keep_last: int,
        keep_every: int,
        durable: Durable | None = None,
    ) -> None:
        self.directory = directory.absolute()
        self.rank = rank
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.durable = durable or Durable()

    def published(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if p.is_dir() and (m := STEP.match(p.name))
        ]
        return sorted(found)

    def newest_valid(
        self, *, at_most: int | None = None
    ) -> tuple[Checkpoint | None, list[tuple[int, str]]]:
        """The newest checkpoint that verifies (at or before `at_most`), and the steps skipped
        on the way with why. Rank 0 lists and reads the manifests, every rank checks its share
        of the files, and all learn every rank's verdict."""
        listed = [s for s, _ in self.published() if at_most is None or s <= at_most]
        steps: list[int] = broadcast(listed if self.rank == 0 else None)
        skipped: list[tuple[int, str]] = []
        for step in reversed(steps):
            path = self.directory / f"step-{step}"
            manifest, why = broadcast(read_manifest(path) if self.rank == 0 else None)
            problem = why if manifest is None else self._verify_share(step, path, manifest)
            if manifest is not None and problem is None:
                return Checkpoint(step, path, manifest), skipped
            skipped.append((step, f"{path.name}: {problem}"))
        return None, skipped

    def _verify_share(self, step: int, path: Path, manifest: dict[str, Any]) -> str | None:
        """Check this rank's share of `path`'s files; what every rank found wrong, or None."""
        started = time.monotonic()
        world_size = torch.distributed.get_world_size()
        names = assigned(manifest, rank=self.rank, world_size=world_size)
        problem = check(path, manifest, names)
        log(
            "checkpointVerified",
            step=step,
            rank=self.rank,
            files=names,
            bytes=sum(manifest["files"][n]["bytes"] for n in names),
            seconds=round(time.monotonic() - started, 3),
            problem=problem,
        )
        found = [f"{p} (checked by rank {r})" for r, p in enumerate(_gather(problem)) if p]
        return "; ".join(found) or None

    def save(self, engine: Any, *, step: int, info: dict[str, Any]) -> dict[str, Any] | None:
        """Save and publish step `step` (all ranks call this); rank 0 returns the manifest."""
        started = time.monotonic()
        partial = self.directory / f".step-{step}.partial"
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        torch.distributed.barrier()
        with recording(engine, root=partial, rank=self.rank, durable=self.durable) as recorder:
            engine.save_checkpoint(str(partial), tag=TAG, client_state={"trainkube": info})
        mine = [*recorder.written, self._save_rng(partial)]
        mine += [
            hash_and_sync(path, partial, self.rank, self.durable)
            for path in written_outside_engine(engine, root=partial, tag=TAG)
        ]
        self.durable.sync_folders(partial / d.name for d in mine)
        log(
            "checkpointHashed",
            step=step,
            rank=self.rank,
            files=[d.name for d in mine],
            bytes=sum(d.bytes for d in mine),
            seconds=round(time.monotonic() - started, 3),
        )
        claims = _gather(mine)
        manifest, failure = None, None
        if self.rank == 0:
            try:
                manifest = self._publish(partial, step, info, claims)
            except UnaccountedFilesError as error:
                failure = f"checkpoint step-{step} not published: {error}"
        failure = broadcast(failure)
        if failure:
            raise UnaccountedFilesError(failure)
        if manifest is not None:
            manifest["seconds"] = round(time.monotonic() - started, 3)
            manifest["kept"] = [s for s, _ in self.published()]
        return manifest

    def _save_rng(self, partial: Path) -> FileDigest:
        path = partial / f"rng-rank{self.rank}.pt"
        state = rng_state()  # the CPU's generator, and the GPUs' where there are any
        sha256, size = write_hashed(path, lambda out: torch.save(state, out))
        self.durable.sync(path)
        return FileDigest(path.name, sha256, size, self.rank)

    def _publish(
        self, partial: Path, step: int, info: dict[str, Any], claims: list[list[FileDigest]]
    ) -> dict[str, Any]:
        """Rank 0: the manifest from every rank's digests, then the durable rename."""
        digests = account(listing(partial), claims)
        manifest = write_manifest(partial, {**info, "step": step}, digests, durable=self.durable)
        final = self.directory / f"step-{step}"
        replaced = self.directory / f".step-{step}.replaced"
        if final.exists():  # the same step saved again after a resume from an older one
            shutil.rmtree(replaced, ignore_errors=True)
            final.rename(replaced)
        self.durable.publish(partial, final)
        shutil.rmtree(replaced, ignore_errors=True)
        self._apply_retention()
        return manifest

    def _apply_retention(self) -> None:
        """Remove the steps retention does not keep, and what crashed saves left behind (no
        other save can be under way: saves are collective and one at a time)."""
        steps = [s for s, _ in self.published()]
        keep = retained(steps, keep_last=self.keep_last, keep_every=self.keep_every)
        for step, path in self.published():
            if step not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.iterdir():
            if LEFTOVER.match(path.name):
                shutil.rmtree(path, ignore_errors=True)

    def prepare_universal(self, checkpoint: Checkpoint) -> Path:
        """Convert `checkpoint` to DeepSpeed's universal format (rank 0, once)."""
        target = checkpoint.path / UNIVERSAL_TAG
        if self.rank == 0 and not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deepspeed.checkpoint.ds_to_universal",
                    "--input_folder",
                    str(checkpoint.path / TAG),
                    "--output_folder",
                    str(target),
                    "--inject_missing_state",
                ],
                check=True,
            )
            (target / ".complete").touch()
        torch.distributed.barrier()
        return target

    def load(self, engine: Any, checkpoint: Checkpoint, *, universal: bool) -> dict[str, Any]:
        """Load `checkpoint` into `engine`; returns what `save` stored in `info`."""
        tag = UNIVERSAL_TAG if universal else TAG
        _, client = engine.load_checkpoint(str(checkpoint.path), tag=tag)
        rng = checkpoint.path / f"rng-rank{self.rank}.pt"
        if rng.exists() and not universal:
            restore_rng_state(torch.load(rng))
        info: dict[str, Any] = (client or {}).get("trainkube", checkpoint.manifest)
        return info
