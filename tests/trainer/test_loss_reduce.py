"""The loss check's sum over 2 real ranks: the same exact means on every rank, through
DeepSpeed's shared memory (all ranks on this machine, as the deepspeed launcher says with
LOCAL_SIZE) and through the gloo process group (LOCAL_SIZE unset, as across machines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.reduce_worker import COUNT, totals
from tests.trainer.runs import spawn_ranks

RANKS = 2


def _means(root: Path) -> list[dict[str, Any]]:
    out = root / "means.json"
    processes = spawn_ranks(
        "tests.trainer.reduce_worker", RANKS, lambda _: ["--out", str(out)], cache=root
    )
    for process in processes:
        assert process.wait(timeout=180) == 0
    return [json.loads((root / f"means-{rank}.json").read_text()) for rank in range(RANKS)]


def _expected() -> list[float]:
    per_rank = [[float(total) for total in totals(rank)] for rank in range(RANKS)]
    return [sum(step) / (COUNT * RANKS) for step in zip(*per_rank, strict=True)]


@pytest.mark.parametrize("local_size", ["2", None], ids=["shared-memory", "process-group"])
def test_means_over_ranks_are_exact_and_the_same_on_every_rank(
    local_size: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if local_size is None:
        monkeypatch.delenv("LOCAL_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_SIZE", local_size)
    ranks = _means(tmp_path)
    assert [rank["shared"] for rank in ranks] == [local_size is not None] * RANKS
    if local_size is not None:
        assert all(rank["op"] for rank in ranks)  # DeepSpeed built its op: the path was taken
    for rank in ranks:
        assert rank["means"] == ranks[0]["means"]  # identical, not just close
        for means in rank["means"]:
            assert means == pytest.approx(_expected(), rel=1e-7)
