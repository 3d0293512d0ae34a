"""Training and validation sequences from a run config's data section.

Both are views of one prepared folder of token shards (`data/tokens.py`): the folder the job names
(`files.format: tokens`), or one the trainer prepares in its local cache when it starts (local
rank 0 of each node writes it, the other ranks wait). A seeded permutation of the samples, fixed
for the run, holds out the first `validationFraction` of them; the rest are the training set,
which the sampler orders per epoch. Nothing here holds more than the samples asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import PreTrainedTokenizerBase

from trainkube.api.data import FileFormat
from trainkube.runconfig import DataRef, ModelRef
from trainkube_trainer import secrets
from trainkube_trainer.data.prepare import (
    cache_folder,
    kind_of,
    prepare_cached,
    tokenizer_identity,
)
from trainkube_trainer.data.sampler import Permutation, key
from trainkube_trainer.data.source import DataError
from trainkube_trainer.data.tokens import INDEX, TokenDataset

SPLIT_KEY = 0x5917  # the held-out permutation's purpose, mixed with the seed


@dataclass(frozen=True)
class Sequences:
    """Samples [start, start + count) of a seeded permutation of a prepared folder's samples."""

    dataset: TokenDataset
    permutation: Permutation
    start: int
    count: int

    def __len__(self) -> int:
        return self.count

    def batch(self, indexes: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and labels of the split's samples `indexes`, [len(indexes), length]."""
        return self.read(self.dataset_samples(np.fromiter(indexes, dtype=np.int64)))

    def dataset_samples(self, indexes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The dataset's sample numbers of the split's samples `indexes` (any shape), in one
        vectorised pass: what `read` takes."""
        return self.permutation.many(self.start + indexes)

    def read(self, samples: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and labels of the dataset's samples `samples` (`dataset_samples`, one
        dimension), in one read: [len(samples), length]."""
        ids, labels = self.dataset.samples(samples)
        return torch.from_numpy(ids), torch.from_numpy(labels)


def _check(dataset: TokenDataset, data: DataRef, tokenizer: PreTrainedTokenizerBase) -> None:
    where = f"data.files.path {dataset.directory}"
    if dataset.kind is not kind_of(data):
        raise DataError(
            f"{where} holds {dataset.kind} data but the job's data section describes "
            f"{kind_of(data)} data: set promptField and responseField exactly when the folder "
            "was prepared from prompt/response records"
        )
    theirs, ours = dataset.index.get("tokenizer", {}), tokenizer_identity(tokenizer)
    if theirs.get("sha256") != ours["sha256"]:
        raise DataError(
            f"{where} was prepared with the tokenizer {theirs.get('name')!r} "
            f"({theirs.get('vocabSize')} tokens), the model's is {ours['name']!r} "
            f"({ours['vocabSize']} tokens): prepare the data with the model's tokenizer"
        )


def open_prepared(
    data: DataRef,
    tokenizer: PreTrainedTokenizerBase,
    *,
    token: str | None = None,
    local_main: bool = True,
    barrier: Callable[[], object] | None = None,
) -> TokenDataset:
    """The prepared folder of `data`: its own, or the local cache's (made by the local main
    process while the others wait at `barrier`)."""
    if data.files is not None and data.files.format is FileFormat.TOKENS:
        dataset = TokenDataset(Path(data.files.path), sequence_length=data.sequence_length)
        _check(dataset, data, tokenizer)
        return dataset
    failed: BaseException | None = None
    folder: Path | None = None
    if local_main:
        try:
            folder = prepare_cached(data, tokenizer, token=token)
        except BaseException as error:  # the others must not wait forever
            failed = error
    if barrier is not None:
        barrier()
    if failed is not None:
        raise failed
    if folder is None:
        folder = cache_folder(data, tokenizer)
        if not (folder / INDEX).exists():
            raise DataError(f"local rank 0 did not prepare the data in {folder}: see its log")
    return TokenDataset(folder, sequence_length=data.sequence_length)


def split(
    dataset: TokenDataset, *, validation_fraction: float, seed: int
) -> tuple[Sequences, Sequences]:
    """Training and validation views: the held-out samples are the first
    `validation_fraction` (at least one when it is not 0) of a permutation fixed by `seed`."""
    total = len(dataset)
    if total == 0:
        raise DataError(
            f"{dataset.index['tokens']} tokens of data make no sequence of {dataset.length}: "
            "use a shorter sequenceLength or more data"
        )
    held_out = max(1, int(total * validation_fraction)) if validation_fraction > 0 else 0
    held_out = min(held_out, total - 1)
    permutation = Permutation(total, key(seed, SPLIT_KEY))
    return (
        Sequences(dataset, permutation, held_out, total - held_out),
        Sequences(dataset, permutation, 0, held_out),
    )


def train_and_validation(
    data: DataRef,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int,
    model: ModelRef,
    local_main: bool = True,
    barrier: Callable[[], object] | None = None,
) -> tuple[Sequences, Sequences]:
    """The training and validation sequences of `data`, prepared when needed."""
    token = secrets.read(model.token_file) if model.token_file else None
    dataset = open_prepared(data, tokenizer, token=token, local_main=local_main, barrier=barrier)
    return split(dataset, validation_fraction=data.validation_fraction, seed=seed)
