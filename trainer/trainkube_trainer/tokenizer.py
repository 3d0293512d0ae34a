"""A byte-level tokenizer that needs no download: transformers' ByT5 tokenizer (256 byte ids
after pad, eos and unk), with no extra ids. It saves and loads like any other tokenizer, so a
model trained from an architecture carries it in its output folder."""

from __future__ import annotations

from transformers import ByT5Tokenizer, PreTrainedTokenizerBase

BYTE_VOCAB_SIZE = 259


def byte_tokenizer() -> PreTrainedTokenizerBase:
    return ByT5Tokenizer(extra_ids=0)
