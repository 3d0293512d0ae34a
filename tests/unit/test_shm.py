"""Leftover DeepSpeed shared memory: only segments no process maps are stale."""

from __future__ import annotations

from pathlib import Path

from tests.localcluster.shm import mapped_paths, remove_stale_segments, stale_segments


def _maps(proc: Path, pid: int, *paths: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    lines = [
        f"7f00000{i}000-7f00000{i}fff rw-s 00000000 00:1a 123 {path}"
        for i, path in enumerate(paths)
    ]
    lines.append("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 ")  # anonymous: no path
    (proc / str(pid) / "maps").write_text("\n".join(lines) + "\n")


def test_mapped_paths_reads_every_process_and_drops_the_deleted_mark(tmp_path: Path) -> None:
    _maps(tmp_path, 10, "/dev/shm/a", "/usr/lib/libc.so.6")
    _maps(tmp_path, 11, "/dev/shm/b (deleted)")
    missing = tmp_path / "12" / "maps"  # a process that ended while being read
    found = mapped_paths([tmp_path / "10" / "maps", tmp_path / "11" / "maps", missing])
    assert found == {"/dev/shm/a", "/usr/lib/libc.so.6", "/dev/shm/b"}


def test_only_unmapped_deepspeed_segments_are_stale_and_removed(tmp_path: Path) -> None:
    shm, proc = tmp_path / "shm", tmp_path / "proc"
    shm.mkdir()
    in_use = shm / "deepspeed_allreduce_buffer_0_127.0.0.1_29500_0"
    left = shm / "deepspeed_allreduce_buffer_0_127.0.0.1_29501_1"
    other = shm / "someone-elses-segment"
    for path in (in_use, left, other):
        path.write_bytes(b"x" * 1000)
    _maps(proc, 42, str(in_use))

    assert stale_segments(shm, proc) == [left]
    assert remove_stale_segments(shm, proc) == 1000
    assert sorted(p.name for p in shm.iterdir()) == sorted([in_use.name, other.name])
    assert remove_stale_segments(shm, proc) == 0
