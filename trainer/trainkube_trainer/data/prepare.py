"""Preparation: records (built-in, files or a hub dataset) to a folder of token shards.

`trainkube prepare` runs it once for a large corpus, ahead of training (a plain Kubernetes Job
with the trainer image and the data volume mounted), and the job then names the folder with
`data.files.format: tokens`. For any other data the trainer runs it when it starts, once per
node, into a local cache keyed by the data and the tokenizer, so small corpora (the built-in
ones, a few files) take the same path through the same shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from trainkube.api.data import BuiltinCorpus, FileFormat, HubDataset
from trainkube.api.model import HubModel
from trainkube.runconfig import DataRef, Files, ModelRef
from trainkube_trainer import secrets
from trainkube_trainer.data.source import record_batches
from trainkube_trainer.data.tokenize import encode_prompt_response, encode_text
from trainkube_trainer.data.tokens import INDEX, SHARD_TOKENS, Kind, TokenWriter

CACHE_ENV = "TRAINKUBE_TOKENS_CACHE"


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What prepared tokens record of their tokenizer: its name, size and a digest of its
    vocabulary (the same tokenizer from the hub or a folder gives the same digest)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {
        "name": tokenizer.name_or_path or type(tokenizer).__name__,
        "vocabSize": len(tokenizer),
        "sha256": hashlib.sha256(vocab.encode()).hexdigest(),
    }


def kind_of(data: DataRef) -> Kind:
    return Kind.PROMPT_RESPONSE if data.prompt_field and data.response_field else Kind.TEXT


def describe(data: DataRef) -> dict[str, Any]:
    """The data source and the fields read from it, as recorded in the index."""
    return data.model_dump(
        mode="json",
        by_alias=True,
        exclude_none=True,
        include={"hub", "files", "builtin", "text_field", "prompt_field", "response_field"},
    )


def prepare(
    batches: Iterable[dict[str, list[Any]]],
    tokenizer: PreTrainedTokenizerBase,
    output: Path,
    *,
    data: DataRef,
    shard_tokens: int = SHARD_TOKENS,
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenize `batches` of `data`'s records into shards under `output`; the index."""
    kind = kind_of(data)
    writer = TokenWriter(
        output,
        kind=kind,
        vocab_size=len(tokenizer),
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ),
        metadata={"tokenizer": tokenizer_identity(tokenizer), "source": describe(data)},
        shard_tokens=shard_tokens,
    )
    started, tokens, reported = time.monotonic(), 0, 0.0
    for batch in batches:
        if kind is Kind.TEXT:
            encoded = encode_text(batch, tokenizer, field=data.text_field)
        else:
            encoded = encode_prompt_response(
                batch,
                tokenizer,
                prompt_field=str(data.prompt_field),
                response_field=str(data.response_field),
            )
        writer.add(*encoded)
        tokens += len(encoded[0])
        elapsed = time.monotonic() - started
        if progress and elapsed - reported >= 10:
            reported = elapsed
            print(f"{tokens:,} tokens, {tokens / elapsed:,.0f}/s", file=sys.stderr, flush=True)
    index = writer.close()
    index["seconds"] = round(time.monotonic() - started, 3)
    return index


def cache_folder(data: DataRef, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Where the trainer prepares `data` for itself: one folder per data and tokenizer."""
    key = json.dumps(
        {"data": describe(data), "tokenizer": tokenizer_identity(tokenizer)}, sort_keys=True
    )
    base = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "trainkube-tokens")
    return base / hashlib.sha256(key.encode()).hexdigest()[:24]


def prepare_cached(
    data: DataRef, tokenizer: PreTrainedTokenizerBase, *, token: str | None = None
) -> Path:
    """The prepared folder of `data` in the local cache, made when missing: written under a
    name of its own, then renamed into place, so processes racing to make it never see each
    other's half-written files."""
    folder = cache_folder(data, tokenizer)
    if (folder / INDEX).exists():
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    prepare(record_batches(data, token=token), tokenizer, partial, data=data)
    try:
        partial.rename(folder)
    except OSError:  # another process got there first
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / INDEX).exists():
            raise
    return folder


def run_cli(args: argparse.Namespace) -> int:
    """`trainkube prepare`: the data and tokenizer from the command line, the same loaders a
    job uses; prints the index's summary."""
    from trainkube_trainer.tokenizer import TokenizerError, load_tokenizer  # noqa: PLC0415

    if args.files and not args.format:
        print("error: --files needs --format (jsonl, text or parquet)", file=sys.stderr)
        return 2
    if bool(args.prompt_field) != bool(args.response_field):
        print("error: --prompt-field and --response-field go together", file=sys.stderr)
        return 2
    try:
        data = DataRef(
            files=Files(path=args.files, format=FileFormat(args.format)) if args.files else None,
            hub=HubDataset(
                id=args.hub_dataset,
                config=args.hub_config,
                split=args.hub_split,
                revision=args.hub_revision,
            )
            if args.hub_dataset
            else None,
            builtin=BuiltinCorpus(args.builtin) if args.builtin else None,
            text_field=args.text_field,
            prompt_field=args.prompt_field,
            response_field=args.response_field,
        )
        tokenizer_path = (
            args.tokenizer if args.tokenizer and Path(args.tokenizer).exists() else None
        )
        model = ModelRef(
            tokenizer_path=tokenizer_path,
            tokenizer_hub=HubModel(id=args.tokenizer, revision=args.tokenizer_revision)
            if args.tokenizer and not tokenizer_path
            else None,
            token_file=args.token_file,
        )
        token = secrets.read(args.token_file) if args.token_file else None
        tokenizer = load_tokenizer(model)
        index = prepare(
            record_batches(data, token=token),
            tokenizer,
            args.output,
            data=data,
            shard_tokens=args.shard_tokens,
            progress=True,
        )
    except (ValueError, OSError) as error:  # DataError, TokenizerError, a bad enum value...
        kind = "tokenizer" if isinstance(error, TokenizerError) else type(error).__name__
        print(f"error ({kind}): {error}", file=sys.stderr)
        return 2
    seconds = max(index["seconds"], 1e-9)
    print(
        f"wrote {args.output}: {index['tokens']:,} tokens ({index['dtype']}) in "
        f"{index['documents']:,} documents, {len(index['shards'])} shards, "
        f"{index['tokens'] / seconds:,.0f} tokens/s; train on it with data.files "
        f"{{path: ..., format: tokens}}"
    )
    return 0
