"""Loading a model to evaluate: whole on the rank's device when it fits, else with Accelerate's
big-model inference, so an EvalJob can judge a model larger than one device.

Accelerate sizes the model before any weight is read (the model built on the meta device,
`init_empty_weights`, measured by `compute_module_sizes`); one larger than the budget is loaded
with a device map (`device_map="auto"` and `max_memory`): the first layers on the device, the
rest in host memory and, past that, in an offload folder on disk, each moved in for its forward
pass. The results are the same, only slower; the latency evaluation then measures that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from trainkube.runconfig import ModelRef
from trainkube_trainer import secrets
from trainkube_trainer.models import load_model
from trainkube_trainer.reporting import log

DEVICE_SHARE = 0.8  # of a GPU's free memory for weights; the rest for activations and KV cache


def _source(ref: ModelRef) -> tuple[str, dict[str, Any]] | None:
    """What from_pretrained takes for `ref` (a folder or a hub id, and its arguments)."""
    if ref.path is not None:
        return ref.path, {}
    if ref.hub is not None:
        token = secrets.read(ref.token_file) if ref.token_file else None
        return ref.hub.id, {"revision": ref.hub.revision, "token": token}
    return None


def config_bytes(config: Any, dtype: torch.dtype) -> int:
    """Bytes of the weights (and buffers) of a model of `config` in `dtype`: Accelerate builds
    it on the meta device, where no tensor takes memory, and adds up its modules' sizes."""
    from accelerate import init_empty_weights  # type: ignore[import-untyped]  # noqa: PLC0415
    from accelerate.utils import compute_module_sizes  # type: ignore[import-untyped]  # noqa: PLC0415

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return int(compute_module_sizes(empty, dtype=dtype)[""])


def weight_bytes(ref: ModelRef, dtype: torch.dtype) -> int | None:
    """The model's weights in `dtype`, from its config alone (no weight is read); None for a
    model built from an architecture, which has no config to read yet."""
    source = _source(ref)
    if source is None:
        return None
    name, kwargs = source
    return config_bytes(AutoConfig.from_pretrained(name, **kwargs), dtype)


def device_budget(device: torch.device) -> int | None:
    """Bytes of weights the device takes: a share of a GPU's free memory; None on the CPU
    (the host's memory is the pod's, and the model is loaded into it whole)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * DEVICE_SHARE)


def load(
    ref: ModelRef,
    *,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype,
    device: torch.device,
    budget: int | None,
    offload_folder: Path,
) -> Any:
    """The model, in eval mode, whole on `device` when its weights fit `budget` bytes (or no
    budget is given), else spread by a device map: `budget` on `device`, the rest in host
    memory and then `offload_folder`."""
    size = weight_bytes(ref, dtype) if budget is not None else None
    source = _source(ref)
    if budget is None or size is None or size <= budget or source is None:
        whole: Any = load_model(ref, tokenizer=tokenizer, dtype=dtype)
        return whole.to(device).eval()
    name, kwargs = source
    max_memory: dict[int | str, int] = {"cpu": budget}
    if device.type == "cuda":
        import psutil  # type: ignore[import-untyped]  # noqa: PLC0415 - Accelerate needs it

        host = int(psutil.virtual_memory().available * DEVICE_SHARE)
        max_memory = {device.index or 0: budget, "cpu": host}
    offload_folder.mkdir(parents=True, exist_ok=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        name,
        dtype=dtype,
        device_map="auto",
        max_memory=max_memory,
        offload_folder=str(offload_folder),
        **kwargs,
    )
    if ref.adapter_path:
        from peft import PeftModel  # noqa: PLC0415

        model = PeftModel.from_pretrained(model, ref.adapter_path)
    placed = sorted({str(where) for where in model.hf_device_map.values()})
    log("modelOffloaded", model=name, weightBytes=size, budgetBytes=budget, devices=placed)
    return model.eval()
