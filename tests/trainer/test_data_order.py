"""The token order as real processes see it: ranks that prepare the data themselves (one
writes, the others wait) and read only their own samples; a run resumed mid-epoch on two ranks
trains on exactly the tokens, in exactly the order, that one rank would have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.data_order_worker import DATA, GLOBAL_BATCH, SEED
from tests.trainer.runs import spawn_ranks
from trainkube.runconfig import ModelRef
from trainkube_trainer.data.prepare import CACHE_ENV
from trainkube_trainer.datasets_split import train_and_validation
from trainkube_trainer.tokenizer import byte_tokenizer

REPO = Path(__file__).resolve().parents[2]


def _run(ranks: int, first: int, end: int, root: Path) -> dict[str, Any]:
    """Token ids of batches [first, end) from `ranks` processes, merged by key."""
    root.mkdir(parents=True, exist_ok=True)
    outs = [root / f"{ranks}-{rank}.json" for rank in range(ranks)]
    processes = spawn_ranks(
        "tests.trainer.data_order_worker",
        ranks,
        lambda rank: ["--first", str(first), "--end", str(end), "--out", str(outs[rank])],
        cache=root / f"cache-{ranks}",
    )
    merged: dict[str, Any] = {}
    for process, out in zip(processes, outs, strict=True):
        assert process.wait(timeout=300) == 0
        merged.update(json.loads(out.read_text()))
    return merged


def _order(merged: dict[str, Any], ranks: int, batches: range) -> list[list[int]]:
    """Samples in global order: batch, then micro-step, then rank. Every micro-step trains 8
    sequences (8 / ranks on each), so a global batch of 16 is 2 micro-steps on any count."""
    return [
        row
        for batch in batches
        for k in range(2)
        for rank in range(ranks)
        for row in merged.get(f"{batch},{k},{rank}", [])
    ]


def test_a_resume_mid_epoch_on_two_ranks_trains_on_the_one_rank_token_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the first epoch ends: resume just before it, so the two-rank part crosses it.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "probe"))
    train, _ = train_and_validation(DATA, byte_tokenizer(), seed=SEED, model=ModelRef())
    epoch = len(train) // GLOBAL_BATCH
    first, resume, end = epoch - 4, epoch - 2, epoch + 2
    one = _run(1, first, end, tmp_path)
    two = _run(2, resume, end, tmp_path)
    straight = _order(one, 1, range(first, end))
    assert len(straight) == (end - first) * 16
    resumed = _order(one, 1, range(first, resume)) + _order(two, 2, range(resume, end))
    assert resumed == straight
    assert len({tuple(row) for row in straight}) > len(straight) // 2  # real, varied samples
