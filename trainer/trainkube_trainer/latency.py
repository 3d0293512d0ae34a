"""Generation latency: time to first token and tokens per second, one prompt at a time.

Both models of an A/B run are timed by the same process on the same device with the same
prompts and decoding (greedy, exactly `max_new_tokens` new tokens: end-of-sequence is held off,
so a model that stops early is not "faster"). The first generations warm the model up and are
not timed. Time to first token covers the prompt's forward pass and the first new token;
tokens per second counts the new tokens after the first over the time they took, so the two
metrics do not overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from trainkube.api.evaljob import LatencySetup

DECODING = "greedy"
SAMPLES = 32  # timed prompts when the evaluation sets no maxExamples


@dataclass(frozen=True)
class Timing:
    """One generation: seconds to the first new token, and per new token after it."""

    first_token: float
    per_token: float


class _FirstTokenClock(BaseStreamer):
    """Notes when `generate` hands over its first new token (its first `put` is the prompt)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync, self.puts, self.first = sync, 0, 0.0

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.sync()
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_generation(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> Timing:
    """Generate `max_new_tokens` greedily after `prompt`; how long it took."""
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    sync = _sync_for(model.device)
    clock = _FirstTokenClock(sync)
    with torch.no_grad():
        sync()
        start = time.perf_counter()
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            streamer=clock,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        sync()
        end = time.perf_counter()
    generated = int(output.shape[1] - encoded["input_ids"].shape[1])
    return Timing(
        first_token=clock.first - start, per_token=(end - clock.first) / max(generated - 1, 1)
    )


def measure(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, warmup: int
) -> list[Timing]:
    """Warm up on the first prompts (untimed), then time one generation per prompt."""
    for index in range(warmup):
        time_generation(model, tokenizer, prompts[index % len(prompts)], max_new_tokens)
    return [time_generation(model, tokenizer, p, max_new_tokens) for p in prompts]


def summary(timings: list[Timing]) -> dict[str, float]:
    """The metrics of a run of timings. tokensPerSecondP95 is the slow tail: the rate of the
    95th-percentile time per token."""
    # numpy's default percentile: linear between the nearest ranks.
    first_p50, first_p95 = np.percentile([t.first_token for t in timings], [50, 95])
    token_p50, token_p95 = np.percentile([t.per_token for t in timings], [50, 95])
    return {
        "ttftP50Ms": 1000 * float(first_p50),
        "ttftP95Ms": 1000 * float(first_p95),
        "tokensPerSecondP50": 1 / float(token_p50),
        "tokensPerSecondP95": 1 / float(token_p95),
        "examples": float(len(timings)),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def setup(*, max_new_tokens: int, samples: int, warmup: int, device: torch.device) -> LatencySetup:
    return LatencySetup(
        decoding=DECODING,
        max_new_tokens=max_new_tokens,
        samples=samples,
        warmup=warmup,
        device=device_name(device),
    )
