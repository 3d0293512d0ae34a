"""A checkpoint's manifest and the checks that use it.

`manifest.json` says what the checkpoint is (step, loss, data position, world size, plan) and
lists every file in it with its sha256, its size and the rank that hashed it, that is the rank
that wrote it. On resume each rank checks its own share of the files (`assigned`): the ones it
wrote when the world size is the same, else a round-robin split. The functions here are pure
apart from reading and writing files; the collectives are in `checkpoints`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainkube_trainer.digests import FileDigest, hash_file
from trainkube_trainer.durable import Durable

MANIFEST = "manifest.json"
UNIVERSAL_TAG = "ds_universal"  # converted on resume inside a published checkpoint: not listed


class UnaccountedFilesError(RuntimeError):
    """The files in a checkpoint folder and the files the ranks say they wrote differ."""


def listing(folder: Path) -> list[str]:
    """Every file a manifest lists: all in `folder` but the manifest and a universal copy."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and UNIVERSAL_TAG not in p.relative_to(folder).parts
    )


def account(present: Iterable[str], claims: Iterable[Iterable[FileDigest]]) -> list[FileDigest]:
    """The digests of every file `present`, each from the one rank that claimed it.

    Raises UnaccountedFilesError for a file no rank claims (something wrote it behind the
    trainer's back, so nobody hashed it), one two ranks claim, or one claimed but absent."""
    by_name: dict[str, FileDigest] = {}
    twice: list[str] = []
    for digest in (d for claim in claims for d in claim):
        if digest.name in by_name:
            twice.append(digest.name)
        by_name[digest.name] = digest
    names = set(present)
    problems = [
        *(f"{n} was written by no rank that hashed it" for n in sorted(names - set(by_name))),
        *(f"{n} is claimed but absent" for n in sorted(set(by_name) - names)),
        *(f"{n} is claimed by two ranks" for n in sorted(twice)),
    ]
    if problems:
        raise UnaccountedFilesError("; ".join(problems))
    return [by_name[n] for n in sorted(names)]


def write_manifest(
    folder: Path,
    info: dict[str, Any],
    digests: Iterable[FileDigest] | None = None,
    *,
    durable: Durable | None = None,
) -> dict[str, Any]:
    """Write and fsync `folder`'s manifest from `digests` (hashed here when not given)."""
    if digests is None:
        digests = [FileDigest(n, *hash_file(folder / n), rank=0) for n in listing(folder)]
    files: dict[str, dict[str, Any]] = {
        d.name: {"sha256": d.sha256, "bytes": d.bytes, "rank": d.rank} for d in digests
    }
    manifest = {**info, "files": files, "bytes": sum(f["bytes"] for f in files.values())}
    (durable or Durable()).write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        return None, f"manifest unreadable: {error}"
    if not isinstance(manifest, dict) or not manifest.get("files"):
        return None, "manifest lists no files"
    return manifest, "ok"


def check(folder: Path, manifest: dict[str, Any], names: Iterable[str]) -> str | None:
    """Why the first of `names` that does not match the manifest does not, or None."""
    for name in names:
        expected = manifest["files"][name]
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} does not match its checksum ({size} bytes, {expected['bytes']} written)"
        if hash_file(path)[0] != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def verify(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """The manifest if every file it lists is present with its checksum, else why not (all
    files, in this process)."""
    manifest, why = read_manifest(folder)
    if manifest is None:
        return None, why
    problem = check(folder, manifest, sorted(manifest.get("files", {})))
    return (manifest, "ok") if problem is None else (None, problem)


def assigned(manifest: dict[str, Any], *, rank: int, world_size: int) -> list[str]:
    """The files `rank` checks: those it wrote when the manifest's world size is this one;
    else (another world size, or a manifest that names no writers) a round-robin split of the
    files, largest first, so the bytes spread evenly."""
    files: dict[str, dict[str, Any]] = manifest.get("files", {})
    same = manifest.get("worldSize") == world_size and all("rank" in f for f in files.values())
    if same:
        return sorted(n for n, f in files.items() if f["rank"] == rank)
    order = sorted(files, key=lambda n: (-int(files[n]["bytes"]), n))
    return sorted(order[rank::world_size])
