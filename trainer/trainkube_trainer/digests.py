"""sha256 of checkpoint files, computed from the bytes on their way to the disk.

`write_hashed` creates a file and lets a serializer (`torch.save`) write into a
`HashingWriter`: the digest comes from the same bytes `write` was given, so a file is never
read back to be hashed. Each slice is hashed on a helper thread while the calling thread
writes it (hashlib and file writes both release the GIL), and the slice is released only when
both are done. Each large slice's writeback to the disk is started as soon as it is written
(Linux `sync_file_range`, which only starts it and returns), so the disk works while the
serializer produces the next slice, instead of the page cache holding it all until the fsync at
the end (measured: tests/benchmarks/checkpoint_io.py). `hash_file` reads a file once,
sequentially: for the few files other code writes, and to verify a checkpoint on resume.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

CHUNK = 16 << 20  # written and hashed at a time
SMALL = 1 << 20
READ_CHUNK = 1 << 20
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):  # not Linux: the fsync at the end does it all
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_START_WRITEBACK = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `length` bytes at `offset` of `fd` to the disk, without
    waiting. Only a hint: durability still comes from the fsync (durable.py)."""
    if _START_WRITEBACK is not None:
        _START_WRITEBACK(fd, offset, length, SYNC_FILE_RANGE_WRITE)


@dataclass(frozen=True)
class FileDigest:
    """One file of a checkpoint: its name inside the checkpoint folder, and who hashed it."""

    name: str
    sha256: str
    bytes: int
    rank: int


class HashingWriter:
    """A write-only file object that hashes what passes through it on the way to `handle`."""

    def __init__(self, handle: IO[bytes], hasher: ThreadPoolExecutor) -> None:
        self.handle = handle
        self.fd = handle.fileno()
        self.hasher = hasher
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) < SMALL:  # a pickle frame or a zip header: not worth a thread hop
            self.digest.update(view)
            self.handle.write(view)
            self.bytes += len(view)
            return len(view)
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            hashed = self.hasher.submit(self.digest.update, piece)
            self.handle.write(piece)  # a write this large goes past the buffer, to the kernel
            start_writeback(self.fd, self.bytes + start, len(piece))
            hashed.result()
        self.bytes += len(view)
        return len(view)

    def flush(self) -> None:
        self.handle.flush()


def write_hashed(path: Path, serialize: Callable[[IO[bytes]], None]) -> tuple[str, int]:
    """Create `path` with what `serialize` writes; its sha256 and size. `serialize` gets a
    write-only file object (write and flush, no seek, no fileno). Not fsynced: the caller
    decides when (see `shards`)."""
    with ThreadPoolExecutor(1) as hasher, path.open("wb") as handle:
        writer = HashingWriter(handle, hasher)
        serialize(cast(IO[bytes], writer))
    return writer.digest.hexdigest(), writer.bytes


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 and size of `path`, read once, sequentially.

    In 1 MiB reads: the kernel's readahead then keeps the disk busy while a chunk is hashed;
    16 MiB reads, larger than the readahead window, left it idle (two ranks verifying from a
    cold cache here: 500-600 MB/s each, against 800-870 MB/s with 1 MiB)."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while count := handle.readinto(view):
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size
