"""Tokenizers: a user's (transformers' AutoTokenizer, from the hub or a folder on a volume), a
`tokenizers` library file, or the byte-level one that needs no download.

A model built from an architecture uses the byte-level tokenizer unless one is named; every
tokenizer saves and loads like any other, so a model's output folder carries its own.
`train_bpe` trains a small byte-level BPE with the `tokenizers` library and saves it as a
transformers folder: what tests use, and what a user with a new corpus and no tokenizer can use.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trainkube.runconfig import ModelRef
from trainkube_trainer import secrets

BYTE_VOCAB_SIZE = 259
END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
# The names a `tokenizers` file may give its end-of-sequence token.
EOS_NAMES = (END_OF_TEXT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded; the message says which and why."""


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """transformers' ByT5 tokenizer (256 byte ids after pad, eos and unk), no extra ids."""
    return ByT5Tokenizer(extra_ids=0)


def from_path(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder (transformers' save_pretrained, or one holding a `tokenizers`
    tokenizer.json) or from a `tokenizers` .json file."""
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"tokenizer path {path} does not exist in the pod")
    if path.is_dir() and (path / "tokenizer_config.json").exists():
        return cast(PreTrainedTokenizerBase, AutoTokenizer.from_pretrained(str(path)))
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file() or file.suffix != ".json":
        raise TokenizerError(
            f"tokenizer path {path} is neither a save_pretrained folder (tokenizer_config.json) "
            "nor a tokenizers file (tokenizer.json)"
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(file))
    specials = set(tokenizer.get_vocab())
    eos = next((name for name in EOS_NAMES if name in specials), None)
    if eos is None:
        raise TokenizerError(
            f"the tokenizers file {file} has no end-of-sequence token (one of "
            f"{', '.join(EOS_NAMES)}): save the tokenizer with save_pretrained and an eos_token"
        )
    tokenizer.eos_token = eos
    return tokenizer


def load_tokenizer(ref: ModelRef) -> PreTrainedTokenizerBase:
    """The tokenizer of a run config's model: its own tokenizer path or hub id if set, else the
    model's (path or hub), else the byte-level one. A tokenizer without a padding token pads
    with its end-of-sequence token."""
    token = secrets.read(ref.token_file) if ref.token_file else None
    tokenizer: Any
    if ref.tokenizer_path:
        tokenizer = from_path(ref.tokenizer_path)
    elif ref.tokenizer_hub:
        tokenizer = AutoTokenizer.from_pretrained(
            ref.tokenizer_hub.id, revision=ref.tokenizer_hub.revision, token=token
        )
    elif ref.path:
        tokenizer = from_path(ref.path)
    elif ref.hub:
        tokenizer = AutoTokenizer.from_pretrained(
            ref.hub.id, revision=ref.hub.revision, token=token
        )
    else:
        tokenizer = byte_tokenizer()
    if tokenizer.eos_token_id is None:
        raise TokenizerError(
            f"the tokenizer {tokenizer.name_or_path!r} has no end-of-sequence token, which "
            "separates packed documents: use a tokenizer with an eos_token"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return cast(PreTrainedTokenizerBase, tokenizer)


def train_bpe(
    texts: Iterable[str], *, vocab_size: int, directory: str | Path
) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on `texts` with the `tokenizers` library and save it to
    `directory` as a transformers tokenizer (load it back with `from_path`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT, pad_token=PAD
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer
