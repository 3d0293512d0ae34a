"""Leftover DeepSpeed shared memory: find and remove segments that no process maps any more.

DeepSpeed's CPU backend maps a 66 MB POSIX shared-memory segment per rank in /dev/shm and never
unlinks it. The trainer unlinks its own once all ranks have it mapped, but a run killed before
that point (or a trainer from before that fix) leaves one behind, and /dev/shm is memory: on the
machine of the local cluster, where pods are processes, such leftovers add up across runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PATTERN = "deepspeed_allreduce_buffer_*"


def mapped_paths(maps_files: Iterable[Path]) -> set[str]:
    """Every file path mapped by the processes whose /proc/PID/maps files are given."""
    paths: set[str] = set()
    for maps in maps_files:
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        for line in text.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6:
                paths.add(fields[5].removesuffix(" (deleted)"))
    return paths


def stale_segments(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> list[Path]:
    """DeepSpeed's segments in `shm_dir` that no running process maps."""
    segments = sorted(shm_dir.glob(PATTERN))
    if not segments:
        return []
    in_use = mapped_paths(proc.glob("[0-9]*/maps"))
    return [segment for segment in segments if str(segment) not in in_use]


def remove_stale_segments(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> int:
    """Unlink the stale segments; the bytes that frees."""
    freed = 0
    for segment in stale_segments(shm_dir, proc):
        try:
            size = segment.stat().st_size
            segment.unlink()
        except FileNotFoundError:  # its owner unlinked it meanwhile
            continue
        freed += size
    return freed
