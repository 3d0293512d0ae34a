"""After a rollback the trainer moves the abandoned timeline's checkpoints aside (a rename,
nothing deleted) before it resumes, so nothing can resume into that timeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.ports import free_port
from trainkube_trainer import lineage
from trainkube_trainer.checkpoints import CheckpointManager


@pytest.fixture
def one_rank() -> Iterator[None]:
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.usefixtures("one_rank")
def test_checkpoints_after_the_rollback_step_are_moved_aside_not_deleted(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        (tmp_path / f"step-{step}").mkdir()
        (tmp_path / f"step-{step}" / "shard.pt").write_bytes(bytes([step]))
    manager = CheckpointManager(tmp_path, rank=0, keep_last=3, keep_every=0)
    moved = lineage.abandon_after(manager.published(), 20, attempt=2, rank=0)
    assert moved == [30, 40]
    assert [step for step, _ in manager.published()] == [10, 20]
    aside = tmp_path / "abandoned" / "attempt-2"
    assert sorted(p.name for p in aside.iterdir()) == ["step-30", "step-40"]
    assert (aside / "step-40" / "shard.pt").read_bytes() == bytes([40])


@pytest.mark.usefixtures("one_rank")
def test_a_rollback_to_the_newest_checkpoint_moves_nothing(tmp_path: Path) -> None:
    (tmp_path / "step-10").mkdir()
    manager = CheckpointManager(tmp_path, rank=0, keep_last=3, keep_every=0)
    assert lineage.abandon_after(manager.published(), 10, attempt=3, rank=0) == []
    assert not (tmp_path / "abandoned").exists()
