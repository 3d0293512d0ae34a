"""Checkpoint files reach the disk: which paths are fsynced and in what order, and digests
computed while torch.save writes (no re-read) that match the bytes on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

from trainkube_trainer.digests import CHUNK, READ_CHUNK, hash_file, write_hashed
from trainkube_trainer.durable import Durable
from trainkube_trainer.shards import recording, written_outside_engine


class Fsyncs:
    """An fsync that does the real thing and records the path of each fd it was given."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, fd: int) -> None:
        self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)


def test_publish_syncs_the_folder_then_renames_then_syncs_the_parent(tmp_path: Path) -> None:
    fsyncs = Fsyncs()
    partial, final = tmp_path / ".step-5.partial", tmp_path / "step-5"
    partial.mkdir()
    Durable(fsync=fsyncs).publish(partial, final)
    assert fsyncs.paths == [str(partial), str(tmp_path)]
    assert final.is_dir()
    assert not partial.exists()


def test_sync_folders_syncs_each_folder_holding_a_file_once(tmp_path: Path) -> None:
    fsyncs = Fsyncs()
    (tmp_path / "ds").mkdir()
    files = [tmp_path / "ds" / "a.pt", tmp_path / "ds" / "b.pt", tmp_path / "rng.pt"]
    Durable(fsync=fsyncs).sync_folders(files)
    assert fsyncs.paths == [str(tmp_path), str(tmp_path / "ds")]


def test_write_json_fsyncs_the_file_it_wrote(tmp_path: Path) -> None:
    fsyncs = Fsyncs()
    Durable(fsync=fsyncs).write_json(tmp_path / "manifest.json", {"step": 3})
    assert fsyncs.paths == [str(tmp_path / "manifest.json")]
    assert (tmp_path / "manifest.json").read_text().startswith("{")


@pytest.mark.parametrize("zipfile", [True, False])
def test_digest_taken_while_torch_saves_is_the_digest_of_the_file(
    tmp_path: Path, zipfile: bool
) -> None:
    # Larger than one chunk, so the hashing thread and the writes interleave.
    state: dict[str, Any] = {"big": torch.randn(CHUNK // 4 + 1000), "step": 7}
    path = tmp_path / "shard.pt"
    sha256, size = write_hashed(
        path, lambda out: torch.save(state, out, _use_new_zipfile_serialization=zipfile)
    )
    assert (sha256, size) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
    loaded = torch.load(path)
    assert torch.equal(loaded["big"], state["big"])
    assert loaded["step"] == 7


def test_hash_file_matches_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * READ_CHUNK + 12345)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f") == (hashlib.sha256(data).hexdigest(), len(data))


class FakeDeepSpeedEngine:
    """The part of DeepSpeedEngine a save touches: its checkpoint engine for the state dicts,
    and `latest` written with open() by global rank 0, as DeepSpeed does."""

    def __init__(self, global_rank: int) -> None:
        self.checkpoint_engine: Any = TorchCheckpointEngine()
        self.global_rank = global_rank
        self.local_rank = global_rank

    def save_checkpoint(self, save_dir: str, tag: str) -> None:
        folder = Path(save_dir) / tag
        self.checkpoint_engine.makedirs(folder, exist_ok=True)
        self.checkpoint_engine.save(state_dict={"w": torch.ones(3)}, path=str(folder / "m.pt"))
        self.checkpoint_engine.save(state_dict={"w": torch.ones(4)}, path=str(folder / "o.pt"))
        if self.global_rank == 0:
            (Path(save_dir) / "latest").write_text(tag)

    def zero_nvme_offload_optimizer(self) -> bool:
        return False


def test_recording_hashes_what_the_engine_saves_and_fsyncs_it_before_the_block_ends(
    tmp_path: Path,
) -> None:
    fsyncs = Fsyncs()
    engine = FakeDeepSpeedEngine(global_rank=0)
    original = engine.checkpoint_engine
    with recording(engine, root=tmp_path, rank=0, durable=Durable(fsync=fsyncs)) as recorder:
        engine.save_checkpoint(str(tmp_path), "ds")
    assert engine.checkpoint_engine is original
    shards = [tmp_path / "ds" / "m.pt", tmp_path / "ds" / "o.pt"]
    assert [(d.name, d.rank) for d in recorder.written] == [("ds/m.pt", 0), ("ds/o.pt", 0)]
    assert [(d.sha256, d.bytes) for d in recorder.written] == [hash_file(s) for s in shards]
    assert sorted(fsyncs.paths) == [str(s) for s in shards]  # all done when the block ends
    assert written_outside_engine(engine, root=tmp_path, tag="ds") == [tmp_path / "latest"]


def test_only_global_rank_0_owns_the_files_written_outside_the_engine(tmp_path: Path) -> None:
    (tmp_path / "latest").write_text("ds")
    assert written_outside_engine(FakeDeepSpeedEngine(1), root=tmp_path, tag="ds") == []


def test_recording_gives_the_engine_back_when_the_save_fails(tmp_path: Path) -> None:
    engine = FakeDeepSpeedEngine(global_rank=0)
    original = engine.checkpoint_engine
    with (
        pytest.raises(OSError, match="disk full"),
        recording(engine, root=tmp_path, rank=0, durable=Durable()),
    ):
        raise OSError("disk full")
    assert engine.checkpoint_engine is original
