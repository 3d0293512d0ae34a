"""Checkpoints: `step-N` folders on the shared volume, published atomically, with a manifest.

Every rank writes its DeepSpeed shards into `.step-N.partial`; then rank 0 writes
`manifest.json` (step, loss, data position, world size, plan, sha256 and size of every file)
and renames the folder to `step-N`, so a half-written checkpoint never looks like one. On
resume the newest checkpoint whose manifest and checksums verify is used; the others are
reported and skipped. Retention keeps the newest `keep_last` and every `keep_every`-th step.
A checkpoint written by a different number of ranks is converted to DeepSpeed's universal
format once (`ds_universal/` inside it) and loaded from that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MANIFEST = "manifest.json"
TAG = "ds"
UNIVERSAL_TAG = "ds_universal"
STEP = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {
        str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in _files(folder)
        if UNIVERSAL_TAG not in p.relative_to(folder).parts
    }
    manifest = {**info, "files": files, "bytes": sum(f["bytes"] for f in files.values())}
    target = folder / MANIFEST
    with target.open("w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


def verify(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The manifest if every file it lists is present with its checksum, else why not."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        return None, f"manifest unreadable: {error}"
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return None, f"{name} is missing"
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            return None, f"{name} does not match its checksum"
    return manifest, "ok"


def retained(steps: list[int], *, keep_last: int, keep_every: int) -> set[int]:
    """The steps retention keeps: the newest `keep_last`, and every multiple of `keep_every`."""
    keep = set(sorted(steps)[-keep_last:]) if keep_last else set()
    if keep_every:
        keep |= {s for s in steps if s % keep_every == 0}
    return keep


class CheckpointManager:
    """Saves, finds and loads checkpoints of one job's DeepSpeed engine."""

    def __init__(self, directory: Path, *, rank: int, keep_last: int, keep_every: int) -> None:
        self.directory = directory
        self.rank = rank
        self.keep_last = keep_last
        self.keep_every = keep_every

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
        on the way with why."""
        skipped: list[tuple[int, str]] = []
        for step, path in reversed(self.published()):
            if at_most is not None and step > at_most:
                continue
            manifest, why = verify(path)
            if manifest is not None:
                return Checkpoint(step, path, manifest), skipped
            skipped.append((step, f"{path.name}: {why}"))
        return None, skipped

    def save(self, engine: Any, *, step: int, info: dict[str, Any]) -> dict[str, Any] | None:
        """Save and publish step `step` (all ranks call this); rank 0 returns the manifest."""
        started = time.monotonic()
        partial = self.directory / f".step-{step}.partial"
        if self.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        torch.distributed.barrier()
        engine.save_checkpoint(str(partial), tag=TAG, client_state={"trainkube": info})
        torch.save(torch.get_rng_state(), partial / f"rng-rank{self.rank}.pt")
        torch.distributed.barrier()
        manifest = None
        if self.rank == 0:
            manifest = write_manifest(partial, {**info, "step": step})
            final = self.directory / f"step-{step}"
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            self._apply_retention()
            manifest["seconds"] = round(time.monotonic() - started, 3)
            manifest["kept"] = [s for s, _ in self.published()]
        torch.distributed.barrier()
        return manifest

    def _apply_retention(self) -> None:
        steps = [s for s, _ in self.published()]
        keep = retained(steps, keep_last=self.keep_last, keep_every=self.keep_every)
        for step, path in self.published():
            if step not in keep:
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
            torch.set_rng_state(torch.load(rng))
        info: dict[str, Any] = (client or {}).get("trainkube", checkpoint.manifest)
        return info
