"""Training and validation sequences from a run config's data section."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from trainkube.runconfig import DataRef, ModelRef
from trainkube_trainer import secrets
from trainkube_trainer.data.source import load_records
from trainkube_trainer.data.tokenize import pack_text, prompt_response


@dataclass(frozen=True)
class Sequences:
    ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def train_and_validation(
    data: DataRef, tokenizer: PreTrainedTokenizerBase, *, seed: int, model: ModelRef
) -> tuple[Sequences, Sequences]:
    """Records shuffled with `seed`, the first `validationFraction` held out, then tokenised."""
    token = secrets.read(model.token_file) if model.token_file else None
    records = load_records(data, token=token)
    random.Random(seed).shuffle(records)
    held_out = int(len(records) * data.validation_fraction)
    if data.validation_fraction > 0:
        held_out = max(held_out, 1)
    parts = (records[held_out:], records[:held_out])
    out = []
    for part in parts:
        if not part:
            empty = torch.zeros((0, data.sequence_length), dtype=torch.long)
            out.append(Sequences(empty, empty.clone()))
            continue
        if data.prompt_field and data.response_field:
            ids, labels = prompt_response(
                part,
                tokenizer,
                prompt_field=data.prompt_field,
                response_field=data.response_field,
                sequence_length=data.sequence_length,
            )
        else:
            ids, labels = pack_text(
                part, tokenizer, field=data.text_field, sequence_length=data.sequence_length
            )
        out.append(Sequences(ids, labels))
    return out[0], out[1]
