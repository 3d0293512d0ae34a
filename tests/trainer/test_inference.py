"""Accelerate in the trainer: it sizes a model from its config before any weight is read (and
agrees with the planner's parameter count), and an evaluated model larger than its device
budget is loaded with a device map, the rest offloaded, computing the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.runs import TINY
from trainkube.api.model import Architecture, ArchitectureFamily
from trainkube.planner import shape_of
from trainkube.runconfig import ModelRef
from trainkube_trainer import inference
from trainkube_trainer.models import config_for, load_model, load_tokenizer
from trainkube_trainer.tokenizer import byte_tokenizer

CPU = torch.device("cpu")


def test_accelerate_sizes_a_saved_model_as_its_loaded_weights(untrained: Path) -> None:
    ref = ModelRef(path=str(untrained))
    model = load_model(ref, tokenizer=load_tokenizer(ref), dtype=torch.float32)
    # What the device holds: the parameters and the buffers (rotary frequencies).
    tensors = [*model.parameters(), *model.buffers()]
    loaded = sum(t.numel() * t.element_size() for t in tensors)
    assert inference.weight_bytes(ref, torch.float32) == loaded
    assert inference.weight_bytes(ref, torch.bfloat16) == loaded // 2
    assert inference.weight_bytes(ModelRef(architecture=TINY), torch.float32) is None


LLAMA_7B = Architecture(
    family=ArchitectureFamily.LLAMA,
    layers=32,
    hidden_size=4096,
    heads=32,
    vocab_size=32000,
    context_length=4096,
)


@pytest.mark.parametrize("architecture", [TINY, LLAMA_7B], ids=["tiny", "llama-7b"])
def test_the_planners_parameter_count_matches_accelerates_size_of_the_model(
    architecture: Architecture,
) -> None:
    config = config_for(architecture, tokenizer=byte_tokenizer())
    size = inference.config_bytes(config, torch.bfloat16)  # on the meta device: even 7B is free
    # The planner's inference estimate is 2 bytes per parameter in 16 bits; Accelerate also
    # counts the few buffers (rotary frequencies).
    parameters = 2 * shape_of(architecture).parameters()
    assert parameters <= size <= parameters * 1.001


def test_a_model_larger_than_its_budget_is_offloaded_and_computes_the_same_logits(
    tmp_path: Path, untrained: Path
) -> None:
    ref = ModelRef(path=str(untrained))
    tokenizer = load_tokenizer(ref)
    size = inference.weight_bytes(ref, torch.float32)
    assert size is not None
    whole = inference.load(
        ref,
        tokenizer=tokenizer,
        dtype=torch.float32,
        device=CPU,
        budget=None,
        offload_folder=tmp_path / "unused",
    )
    spread = inference.load(
        ref,
        tokenizer=tokenizer,
        dtype=torch.float32,
        device=CPU,
        budget=size * 2 // 3,
        offload_folder=tmp_path / "offload",
    )
    assert not hasattr(whole, "hf_device_map")
    # Some modules stay in the budget's memory, the rest is read from disk for each pass.
    assert set(spread.hf_device_map.values()) == {"cpu", "disk"}
    ids = tokenizer("Once upon a time, Mia the cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected, found = whole(input_ids=ids).logits, spread(input_ids=ids).logits
    torch.testing.assert_close(found, expected)
