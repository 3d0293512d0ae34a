"""The trainer's output: the model, or the LoRA adapter and optionally the merged model, written
with save_pretrained so that the trainer's own loading code (and transformers, peft) read it.

Under ZeRO-3 no rank holds the model: DeepSpeed consolidates the 16-bit weights on rank 0 one
layer at a time (`stage3_gather_16bit_weights_on_model_save`, the same consolidation as
`engine.save_16bit_model`) and rank 0 writes them. The merged LoRA model is computed from that
same state dict on rank 0 (W + scaling * B @ A), so no rank ever gathers the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainkube.runconfig import RunConfig
from trainkube_trainer.distributed import DistEnv
from trainkube_trainer.engine import Built

PEFT_PREFIX = "base_model.model."  # what a peft model puts before the base model's names


def save_output(config: RunConfig, built: Built, env: DistEnv) -> dict[str, str]:
    """Write the output folder(s); every rank calls this. Returns what was written (rank 0)."""
    if config.output is None:
        return {}
    out = Path(config.output.directory)
    engine, model = built.engine, built.engine.module
    zero3 = built.ds_config.get("zero_optimization", {}).get("stage") == 3
    # Collective under ZeRO-3: rank 0 receives the weights, the other ranks None.
    state = engine._zero3_consolidated_16bit_state_dict() if zero3 else None
    written: dict[str, str] = {}
    if env.is_main:
        lora = config.method == "lora"
        folder = out / ("adapter" if lora else "model")
        model.save_pretrained(folder, state_dict=state)
        built.tokenizer.save_pretrained(folder)
        written[folder.name] = str(folder)
        if lora and config.output.merge:
            full = state if state is not None else model.state_dict()
            merged = merge_lora(full, lora_layers(model))
            model.get_base_model().save_pretrained(out / "model", state_dict=merged)
            built.tokenizer.save_pretrained(out / "model")
            written["model"] = str(out / "model")
    torch.distributed.barrier()
    return written


def lora_layers(model: Any, adapter: str = "default") -> dict[str, tuple[float, bool]]:
    """Each LoRA layer of a peft model: its name, scaling and whether its weight is stored
    transposed (fan_in_fan_out, GPT-2's Conv1D)."""
    layers = {}
    for name, module in model.named_modules():
        if adapter in getattr(module, "lora_embedding_A", {}):
            raise ValueError(
                f"output.merge: the LoRA layer {name} is an embedding, which the trainer does "
                "not merge; leave embeddings out of lora.targetModules or set merge false"
            )
        if adapter in getattr(module, "lora_A", {}):
            layers[name] = (float(module.scaling[adapter]), bool(module.fan_in_fan_out))
    return layers


def merge_lora(
    state: dict[str, torch.Tensor], layers: dict[str, tuple[float, bool]], adapter: str = "default"
) -> dict[str, torch.Tensor]:
    """The base model's state dict (its own names) with each LoRA layer's update
    scaling * B @ A added to the layer's weight, in the weight's dtype."""
    merged = {
        key.removeprefix(PEFT_PREFIX).replace(".base_layer.", "."): value
        for key, value in state.items()
        if ".lora_" not in key
    }
    for name, (scaling, transposed) in layers.items():
        a = state[f"{name}.lora_A.{adapter}.weight"].float()
        b = state[f"{name}.lora_B.{adapter}.weight"].float()
        delta = (b @ a) * scaling
        key = f"{name.removeprefix(PEFT_PREFIX)}.weight"
        weight = merged[key]
        merged[key] = (weight.float() + (delta.T if transposed else delta)).to(weight.dtype)
    return merged
