"""The merged LoRA model the trainer writes from a state dict (as ZeRO-3 consolidates it on
rank 0) equals peft's merge_and_unload of the same adapter."""

from __future__ import annotations

import copy

import torch

from tests.trainer.runs import TINY
from trainkube.runconfig import ModelRef
from trainkube_trainer.models import apply_lora, load_model, load_tokenizer
from trainkube_trainer.output import lora_layers, merge_lora

CHANGED = "model.layers.0.self_attn.q_proj.weight"


def test_merging_lora_from_a_state_dict_equals_peft_merge_and_unload() -> None:
    ref = ModelRef(architecture=TINY)
    torch.manual_seed(0)
    model = load_model(ref, tokenizer=load_tokenizer(ref), dtype=torch.float32)
    before = model.state_dict()[CHANGED].clone()
    peft = apply_lora(model, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
    for name, param in peft.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the update something to add
            torch.nn.init.normal_(param, std=0.05)
    layers = lora_layers(peft)
    assert len(layers) == 2 * TINY.layers
    assert {scaling for scaling, _ in layers.values()} == {2.0}
    merged = merge_lora(peft.state_dict(), layers)
    expected = copy.deepcopy(peft).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.allclose(merged[key], value, atol=1e-6), key
    # The update was added: the merged weight is not the base weight.
    assert not torch.allclose(merged[CHANGED], before, atol=1e-4)
