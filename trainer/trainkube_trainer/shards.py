"""Which rank wrote which file of a checkpoint, known from the writes themselves, not guessed
from file names, and each file hashed by the rank that wrote it.

DeepSpeed's `save_checkpoint` writes every state dict through its engine's
`checkpoint_engine.save(state_dict, path)`: the model states on the ranks that hold them, each
rank's ZeRO optimizer partition. That is the one place DeepSpeed lets a caller decide how a
file is written, so for the length of one save `recording` puts a `RecordingEngine` there: it
runs the same `torch.save` into a `HashingWriter` (the digest comes from the bytes being
written, nothing is read back) and records the file's name, digest and size. Each file is
fsynced on a helper thread as soon as it is closed, so the disk takes one file while DeepSpeed
serializes the next (the fsync touches no tensor); `recording` waits for every fsync before it
ends. Every other call goes to DeepSpeed's own engine.

A few files DeepSpeed writes by other means, so they cannot be hashed while written: on global
rank 0 `latest` (with `open`) and the recovery scripts `zero_to_fp32.py` and `zero_to_torch.py`
(with `shutil.copyfile`); with the optimizer offloaded to NVMe, each rank's copy of its swap
folder (`copytree`). The rank that wrote them, as DeepSpeed's code decides, reads them once
after the save returns (`written_outside_engine`). The manager checks that the files all ranks
report are exactly the files in the folder (`manifest.account`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from trainkube_trainer.digests import FileDigest, hash_file, write_hashed
from trainkube_trainer.durable import Durable

RANK0_FILES = ("latest", "zero_to_fp32.py", "zero_to_torch.py")  # beside the tag folder


class RecordingEngine:
    """Stands in for DeepSpeed's checkpoint engine during one save; see the module doc."""

    def __init__(
        self, inner: Any, *, root: Path, rank: int, durable: Durable, syncer: ThreadPoolExecutor
    ) -> None:
        self.inner = inner
        self.root = root
        self.rank = rank
        self.durable = durable
        self.syncer = syncer
        self.written: list[FileDigest] = []
        self.syncing: list[Future[None]] = []

    def save(self, state_dict: Any, path: str) -> None:
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine  # noqa: PLC0415

        target = Path(path)
        if type(self.inner) is TorchCheckpointEngine:  # a subclass may write differently
            zipfile = bool(self.inner.zipfile_serialization)
            sha256, size = write_hashed(target, lambda out: _save(state_dict, out, zipfile))
            # On the disk while DeepSpeed serializes the next file; `recording` waits for it.
            self.syncing.append(self.syncer.submit(self.durable.sync, target))
            self.written.append(self._digest(target, sha256, size))
        else:  # an engine the trainer never configures: let it write, then read the file once
            self.inner.save(state_dict, path)
            self.written.append(hash_and_sync(target, self.root, self.rank, self.durable))

    def _digest(self, path: Path, sha256: str, size: int) -> FileDigest:
        return FileDigest(relative(path, self.root), sha256, size, self.rank)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _save(state_dict: Any, out: Any, zipfile: bool) -> None:
    """`torch.save` without the zip format's CRC32 of every record: the sha256 computed while
    writing (digests.py) already covers every byte, verified on resume, and the CRC was a
    second pass over each tensor's bytes on the save's critical path. torch.load does not
    need it; a zip tool's integrity test of the file would report bad CRCs."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(state_dict, out, _use_new_zipfile_serialization=zipfile)
    finally:
        torch.serialization.set_crc32_options(before)


def relative(path: Path, root: Path) -> str:
    return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(root)))


def hash_and_sync(path: Path, root: Path, rank: int, durable: Durable) -> FileDigest:
    """A file written by other code: hash it by reading it once, and fsync it."""
    sha256, size = hash_file(path)
    durable.sync(path)
    return FileDigest(relative(path, root), sha256, size, rank)


@contextmanager
def recording(engine: Any, *, root: Path, rank: int, durable: Durable) -> Iterator[RecordingEngine]:
    """Record (hash, fsync) what `engine.save_checkpoint` writes on this rank; when the block
    ends without an error, every file recorded is on the disk."""
    inner = engine.checkpoint_engine
    if inner.is_decoupled():
        raise ValueError(
            "checkpoint: DeepSpeed's decoupled checkpoint engine writes after save_checkpoint "
            "returns, so its files cannot be hashed and published; remove checkpoint.writer "
            "from the DeepSpeed config"
        )
    with ThreadPoolExecutor(1, thread_name_prefix="checkpoint-fsync") as syncer:
        recorder = RecordingEngine(inner, root=root, rank=rank, durable=durable, syncer=syncer)
        engine.checkpoint_engine = recorder
        try:
            yield recorder
            for synced in recorder.syncing:
                synced.result()
        finally:
            engine.checkpoint_engine = inner


def written_outside_engine(engine: Any, *, root: Path, tag: str) -> list[Path]:
    """The files this rank's `save_checkpoint` wrote without its checkpoint engine."""
    paths: list[Path] = []
    if engine.global_rank == 0:
        candidates = (root / name for name in RANK0_FILES)
        paths += [p for p in candidates if p.is_file()]
    if engine.zero_nvme_offload_optimizer():
        index = engine.local_rank if engine.use_node_local_storage() else engine.global_rank
        copy = root / tag / "offloaded_tensors" / f"rank{index:0>2d}"
        paths += sorted(p for p in copy.rglob("*") if p.is_file())
    return paths
