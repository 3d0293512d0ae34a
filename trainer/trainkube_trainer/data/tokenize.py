"""Records to token ids, a batch at a time, in the form the shard writer takes: the tokens of
the batch's documents one after the other, each document's length and, for prompt/response
data, the loss mask.

Plain text: each record's text and an end-of-sequence token (the stream is later cut into
sequences of exactly `sequence_length`: packing, no padding, every token trained on).
Prompt/response: prompt + response + end-of-sequence, the loss on the response and the
end-of-sequence token only. `pack_text` and `prompt_response` give the same as tensors, for
small sets held in memory (evaluations).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import PreTrainedTokenizerBase

from trainkube_trainer.data.source import DataError

Encoded = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8] | None]
IGNORE = -100  # labels the loss skips
EMPTY: Encoded = (np.zeros(0, np.int64), np.zeros(0, np.int64), None)


def _field(batch: dict[str, list[Any]], field: str) -> list[str]:
    if field not in batch:
        raise DataError(f"records have no field {field!r} (fields: {sorted(batch)})")
    return [str(value) for value in batch[field]]


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def encode_text(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, *, field: str
) -> Encoded:
    """Documents of plain text, each ending in the end-of-sequence token."""
    eos = [tokenizer.eos_token_id]
    documents = [[*ids, *eos] for ids in _ids(tokenizer, _field(batch, field))]
    lengths = np.fromiter((len(d) for d in documents), np.int64, len(documents))
    tokens = np.fromiter(chain.from_iterable(documents), np.int64, int(lengths.sum()))
    return tokens, lengths, None


def encode_prompt_response(
    batch: dict[str, list[Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_field: str,
    response_field: str,
) -> Encoded:
    """One document per record, prompt + response + end-of-sequence; the mask is 1 on the
    response and the end-of-sequence token."""
    prompts = _ids(tokenizer, _field(batch, prompt_field))
    responses = _ids(tokenizer, _field(batch, response_field))
    eos = tokenizer.eos_token_id
    lengths = np.array([len(p) + len(r) + 1 for p, r in zip(prompts, responses, strict=True)])
    tokens = np.fromiter(
        chain.from_iterable(chain(p, r, (eos,)) for p, r in zip(prompts, responses, strict=True)),
        np.int64,
        int(lengths.sum()),
    )
    mask = np.fromiter(
        chain.from_iterable(
            chain((0 for _ in p), (1 for _ in r), (1,))
            for p, r in zip(prompts, responses, strict=True)
        ),
        np.uint8,
        int(lengths.sum()),
    )
    return tokens, lengths.astype(np.int64), mask


# In memory, for small record lists (evaluation sets): the same encodings, as tensors.


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {field: [r.get(field) for r in records] for field in records[0]} if records else {}


def pack_text(
    records: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    field: str,
    sequence_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and labels, both [n, sequence_length]: the documents packed end to end."""
    tokens, _, _ = encode_text(_columns(records), tokenizer, field=field) if records else EMPTY
    blocks = len(tokens) // sequence_length
    if blocks == 0:
        raise DataError(
            f"{len(tokens)} tokens of data make no sequence of {sequence_length}: use a shorter "
            "sequenceLength or more data"
        )
    ids = torch.from_numpy(tokens[: blocks * sequence_length].copy()).view(blocks, sequence_length)
    return ids, ids.clone()


def prompt_response(
    records: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_field: str,
    response_field: str,
    sequence_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and labels, one row per record, loss on the response only (cut or padded)."""
    tokens, lengths, mask = encode_prompt_response(
        _columns(records), tokenizer, prompt_field=prompt_field, response_field=response_field
    )
    assert mask is not None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(records), sequence_length), pad)
    labels = torch.full((len(records), sequence_length), IGNORE)
    ends = np.cumsum(lengths)
    for row, (end, length) in enumerate(zip(ends, lengths, strict=True)):
        first = int(end - length)
        stop = first + min(int(length), sequence_length)
        ids[row, : stop - first] = torch.from_numpy(tokens[first:stop])
        kept = np.where(mask[first:stop] == 1, tokens[first:stop], IGNORE)
        labels[row, : stop - first] = torch.from_numpy(kept)
    return ids, labels
