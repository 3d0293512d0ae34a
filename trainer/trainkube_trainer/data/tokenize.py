"""Records to training sequences.

Plain text is tokenised, joined with end-of-sequence tokens and cut into blocks of exactly
`sequence_length` tokens (packing: no padding, every token trained on). Prompt/response
records become one sequence each: prompt + response + eos, the loss taken on the response only
(prompt labels are -100), padded or truncated to `sequence_length`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from trainkube_trainer.data.source import DataError

IGNORE = -100


def pack_text(
    records: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    field: str,
    sequence_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and labels, both [n, sequence_length]."""
    if records and field not in records[0]:
        raise DataError(f"records have no field {field!r} (fields: {sorted(records[0])})")
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for record in records:
        stream.extend(tokenizer(str(record[field]), add_special_tokens=False)["input_ids"])
        stream.append(eos)
    blocks = len(stream) // sequence_length
    if blocks == 0:
        raise DataError(
            f"{len(stream)} tokens of data make no sequence of {sequence_length}: use a shorter "
            "sequenceLength or more data"
        )
    ids = torch.tensor(stream[: blocks * sequence_length]).view(blocks, sequence_length)
    return ids, ids.clone()


def prompt_response(
    records: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    prompt_field: str,
    response_field: str,
    sequence_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and labels for supervised fine-tuning, loss on the response only."""
    for field in (prompt_field, response_field):
        if records and field not in records[0]:
            raise DataError(f"records have no field {field!r} (fields: {sorted(records[0])})")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(records), sequence_length), pad)
    labels = torch.full((len(records), sequence_length), IGNORE)
    for row, record in enumerate(records):
        prompt = tokenizer(str(record[prompt_field]), add_special_tokens=False)["input_ids"]
        response = tokenizer(str(record[response_field]), add_special_tokens=False)["input_ids"]
        tokens = ([*prompt, *response, tokenizer.eos_token_id])[:sequence_length]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        start = min(len(prompt), sequence_length)
        labels[row, start : len(tokens)] = torch.tensor(tokens[start:])
    return ids, labels
