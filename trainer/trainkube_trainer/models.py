"""Models through transformers: from the hub, from a folder, or built from an architecture
(fresh weights); their tokenizers come from `trainkube_trainer.tokenizer`. LoRA is a transform
of whatever was loaded (peft).

ZeRO-3 builds and loads the model partitioned: `HfDeepSpeedConfig` must exist before the model
is created, and transformers must have imported its model classes before DeepSpeed's
`zero.Init` runs (both seen on this kind of machine, see shared/notes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainkube.api.model import Architecture, ArchitectureFamily
from trainkube.planner.shape import default_intermediate
from trainkube.runconfig import ModelRef
from trainkube_trainer import secrets
from trainkube_trainer.tokenizer import load_tokenizer

__all__ = ["ModelError", "apply_lora", "config_for", "load_model", "load_tokenizer"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FAMILY_MODEL_TYPE = {
    ArchitectureFamily.LLAMA: "llama",
    ArchitectureFamily.MISTRAL: "mistral",
    ArchitectureFamily.QWEN2: "qwen2",
    ArchitectureFamily.GPT_NEOX: "gpt_neox",
}


class ModelError(ValueError):
    """The model cannot be loaded or built; the message says which and why."""


def _token(ref: ModelRef) -> str | None:
    return secrets.read(ref.token_file) if ref.token_file else None


def config_for(architecture: Architecture, *, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A transformers config for a model built from an architecture."""
    family = architecture.family
    common = {
        "vocab_size": architecture.vocab_size,
        "hidden_size": architecture.hidden_size,
        "num_hidden_layers": architecture.layers,
        "num_attention_heads": architecture.heads,
        "intermediate_size": architecture.intermediate_size
        or default_intermediate(family, architecture.hidden_size),
        "max_position_embeddings": architecture.context_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    if family is not ArchitectureFamily.GPT_NEOX:
        common["num_key_value_heads"] = architecture.kv_heads or architecture.heads
    return AutoConfig.for_model(FAMILY_MODEL_TYPE[family], **common)


def load_model(
    ref: ModelRef, *, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype
) -> PreTrainedModel:
    """The model `ref` names, in `dtype` (fresh weights for an architecture)."""
    if ref.architecture is not None:
        arch = ref.architecture
        if arch.vocab_size < len(tokenizer):
            raise ModelError(
                f"model.architecture.vocabSize {arch.vocab_size} is smaller than the "
                f"tokenizer's {len(tokenizer)} tokens: use at least {len(tokenizer)}"
            )
        config = config_for(arch, tokenizer=tokenizer)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    elif ref.path is not None:
        if not Path(ref.path).exists():
            raise ModelError(f"model path {ref.path} does not exist in the pod")
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype)
    elif ref.hub is not None:
        model = AutoModelForCausalLM.from_pretrained(
            ref.hub.id, revision=ref.hub.revision, token=_token(ref), dtype=dtype
        )
    else:
        raise ModelError("the run config names no model (hub, path or architecture)")
    if ref.adapter_path:
        from peft import PeftModel  # noqa: PLC0415

        model = PeftModel.from_pretrained(model, ref.adapter_path)
    return cast(PreTrainedModel, model)


def apply_lora(
    model: PreTrainedModel, *, rank: int, alpha: float, dropout: float, targets: list[str]
) -> Any:
    """Freeze the base and add LoRA adapters: the same training loop then trains only them."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; any number works
        lora_dropout=dropout,
        target_modules=targets or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
