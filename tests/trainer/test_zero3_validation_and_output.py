"""ZeRO-3 on 2 real gloo ranks: validation over a count that does not split evenly completes
with the exact mean, and the outputs saved from DeepSpeed's consolidated 16-bit state dict (the
model; a LoRA adapter and its merged model) load back with the trainer's loading code and give
the engine's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.runs import spawn_ranks
from trainkube.runconfig import ModelRef
from trainkube_trainer.models import load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[2]
SEQUENCES = 5


def _run(ranks: int, root: Path, *extra: str) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    out = root / "result.json"
    args = ["--root", str(root), "--sequences", str(SEQUENCES), "--out", str(out), *extra]
    processes = spawn_ranks(
        "tests.trainer.zero3_worker", ranks, lambda _: args, cache=root / "cache"
    )
    for process in processes:
        # A rank left waiting in an all-gather would hang here: the timeout turns it into a failure.
        assert process.wait(timeout=240) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(2, tmp_path_factory.mktemp("zero3"), "--lora")


def _saved_model(result: dict[str, Any]) -> Any:
    ref = ModelRef(path=result["written"]["model"])
    return load_model(ref, tokenizer=load_tokenizer(ref), dtype=torch.float32)


def test_zero3_output_loads_back_and_gives_the_engine_outputs(result: dict[str, Any]) -> None:
    ids = torch.tensor(result["ids"][:1])
    with torch.no_grad():
        logits = _saved_model(result)(input_ids=ids).logits[0, :8]
    assert torch.allclose(logits, torch.tensor(result["logits"]), atol=1e-5)


def test_zero3_validation_on_uneven_shards_completes_with_the_loss_of_one_process(
    result: dict[str, Any],
) -> None:
    # Rank 1 had one batch fewer than rank 0 and ran a padding batch; the ranks' mean must be
    # the one a single process gets over all 5 sequences in one pass, with the same weights
    # (the saved model, whose outputs are the engine's: the test above).
    ids, labels = torch.tensor(result["ids"]), torch.tensor(result["labels"])
    assert len(ids) == SEQUENCES
    with torch.no_grad():
        loss = float(_saved_model(result)(input_ids=ids, labels=labels).loss)
    assert result["validationLoss"] == pytest.approx(loss, rel=1e-5)


def test_zero3_lora_adapter_and_merged_model_load_back_with_the_engine_outputs(
    result: dict[str, Any],
) -> None:
    base, written = result["written"]["model"], result["loraWritten"]
    ids = torch.tensor(result["ids"][:1])
    expected = torch.tensor(result["loraLogits"])
    assert not torch.allclose(expected, torch.tensor(result["logits"]), atol=1e-3)
    for ref in (
        ModelRef(path=base, adapter_path=written["adapter"]),
        ModelRef(path=written["model"]),
    ):
        model = load_model(ref, tokenizer=load_tokenizer(ref), dtype=torch.float32)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :8]
        assert torch.allclose(logits, expected, atol=1e-5), ref
