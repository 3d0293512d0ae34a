"""Token shards on disk: what `trainkube prepare` writes and every training rank reads.

A prepared folder holds `index.json` and, per shard, `shard-NNNNN.tokens` (the token ids, one
after the other, uint16 when the vocabulary fits in 16 bits, else uint32), `shard-NNNNN.docs`
(uint64 offsets of each document's first token, and the end) and, for prompt/response data,
`shard-NNNNN.mask` (one byte per token: 1 where the loss is taken). Every file is written under
a temporary name, fsynced and renamed; `index.json` comes last, so a folder with an index is
complete and a crash leaves one without.

Readers map the files on first use (at most OPEN_MAPS at once) and copy out only the samples
they are asked for; once RELEASE_EVERY reads are counted (a gather counts one per sample,
checked after it), the pages of the files those reads touched are released (MADV_DONTNEED),
so a rank's memory stays the same whatever the corpus size: at most the pages of RELEASE_EVERY
reads plus those of the last gather, each read with 2 x 64 KiB of fault-around, resident.

Plain text is one stream of documents, each ending in the end-of-sequence token: sample i is
tokens [i x L, (i + 1) x L) of the stream, across shards, and trains on every token.
Prompt/response data has one sample per document, cut or padded to L, the loss on the
response (and its end-of-sequence token) only.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainkube_trainer.data.source import DataError
from trainkube_trainer.data.tokenize import IGNORE
from trainkube_trainer.durable import Durable

FORMAT = "trainkube-tokens"
VERSION = 1
INDEX = "index.json"
SHARD_TOKENS = 1 << 28  # 256 Mi tokens (512 MiB at 16 bits) per shard by default
FAULT_AROUND = 1 << 16  # Linux's default fault_around_bytes
RELEASE_EVERY = 64  # reads between two releases of the pages they touched
OPEN_MAPS = 64  # shard files mapped at once, per process


class Kind(StrEnum):
    TEXT = "text"
    PROMPT_RESPONSE = "promptResponse"


class TokensError(DataError):
    """A prepared folder is missing, incomplete or does not fit the job; the message says
    which and what to do."""


def dtype_for(vocab_size: int) -> npt.DTypeLike:
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


@dataclass(frozen=True)
class Shard:
    name: str
    tokens: int
    documents: int


class TokenWriter:
    """Writes documents into shards of about `shard_tokens` tokens (a document never spans
    two), each file atomically; `close` writes the index."""

    def __init__(
        self,
        directory: Path,
        *,
        kind: Kind,
        vocab_size: int,
        eos_token_id: int,
        pad_token_id: int,
        metadata: dict[str, Any],
        shard_tokens: int = SHARD_TOKENS,
        durable: Durable | None = None,
    ) -> None:
        if (directory / INDEX).exists():
            raise TokensError(f"{directory} already holds prepared tokens ({INDEX})")
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("shard-*"):  # what a crashed run left
            stale.unlink()
        self.directory, self.kind, self.shard_tokens = directory, kind, shard_tokens
        self.dtype = np.dtype(dtype_for(vocab_size))
        self.durable = durable or Durable()
        self.header = {
            "format": FORMAT,
            "version": VERSION,
            "kind": str(kind),
            "dtype": self.dtype.name,
            "vocabSize": vocab_size,
            "eosTokenId": eos_token_id,
            "padTokenId": pad_token_id,
            **metadata,
        }
        self.shards: list[Shard] = []
        self._files: dict[str, Any] = {}
        self._tokens = self._documents = 0

    def _open(self) -> None:
        name = f"shard-{len(self.shards):05d}"
        suffixes = ["tokens", "docs"] + (["mask"] if self.kind is Kind.PROMPT_RESPONSE else [])
        self._files = {s: (self.directory / f"{name}.{s}.tmp").open("wb") for s in suffixes}
        self._files["docs"].write(np.zeros(1, np.uint64).tobytes())
        self._tokens = self._documents = 0

    def _close_shard(self) -> None:
        name = f"shard-{len(self.shards):05d}"
        for suffix, handle in self._files.items():
            handle.flush()
            self.durable.fsync(handle.fileno())
            handle.close()
            os.replace(self.directory / f"{name}.{suffix}.tmp", self.directory / f"{name}.{suffix}")
        self.shards.append(Shard(name, self._tokens, self._documents))
        self._files = {}

    def add(
        self,
        tokens: npt.NDArray[Any],
        lengths: npt.NDArray[np.int64],
        mask: npt.NDArray[np.uint8] | None = None,
    ) -> None:
        """Append documents: their tokens one after the other, and each one's length."""
        if not self._files:
            self._open()
        if (mask is None) != (self.kind is Kind.TEXT):
            raise ValueError("prompt/response data has a loss mask, plain text none")
        self._files["tokens"].write(np.asarray(tokens, self.dtype).tobytes())
        if mask is not None:
            self._files["mask"].write(np.asarray(mask, np.uint8).tobytes())
        ends = self._tokens + np.cumsum(lengths, dtype=np.uint64)
        self._files["docs"].write(ends.astype(np.uint64).tobytes())
        self._tokens += int(lengths.sum())
        self._documents += len(lengths)
        if self._tokens >= self.shard_tokens:
            self._close_shard()

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the index; the folder is complete once this returns."""
        if self._files:
            self._close_shard()
        index = {
            **self.header,
            "tokens": sum(s.tokens for s in self.shards),
            "documents": sum(s.documents for s in self.shards),
            "shards": [s.__dict__ for s in self.shards],
        }
        partial = self.directory / f"{INDEX}.tmp"
        self.durable.write_json(partial, index)
        os.replace(partial, self.directory / INDEX)
        self.durable.sync(self.directory)
        return index


class _Mapped:
    """One file, mapped read-only; reads copy out and release the pages they touched."""

    def __init__(self, path: Path, dtype: npt.DTypeLike) -> None:
        self.dtype = np.dtype(dtype)
        size = path.stat().st_size
        with path.open("rb") as handle:
            self.map = mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ) if size else None
        if self.map is not None:
            self.map.madvise(mmap.MADV_RANDOM)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()

    def gather(self, starts: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
        """Items [start, start + length) of every start, copied out as int64: [len(starts),
        length], in one pass."""
        assert self.map is not None
        view = np.frombuffer(self.map, self.dtype)
        out: npt.NDArray[np.int64] = view[starts[:, None] + np.arange(length)].astype(np.int64)
        del view  # no view may outlive the mapping's close
        return out

    def read(self, start: int, stop: int, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """Items [start, stop) copied out, as `dtype`."""
        if stop <= start or self.map is None:
            return np.empty(0, dtype)
        item = self.dtype.itemsize
        view = np.frombuffer(self.map, self.dtype, count=stop - start, offset=start * item)
        out = view.astype(dtype)  # a copy, in one pass
        del view
        return out

    def release(self) -> None:
        """Drop the pages reads touched (and the kernel's fault-around mapped with them)."""
        if self.map is not None:
            self.map.madvise(mmap.MADV_DONTNEED)


class TokenDataset:
    """A prepared folder, read sample by sample for sequences of `sequence_length` tokens."""

    def __init__(self, directory: Path, *, sequence_length: int) -> None:
        index_path = directory / INDEX
        if not index_path.exists():
            raise TokensError(
                f"{directory} holds no prepared tokens ({INDEX} is missing; an interrupted "
                "`trainkube prepare` leaves none): prepare the data again"
            )
        self.index: dict[str, Any] = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise TokensError(f"{index_path} is not a {FORMAT} index of version {VERSION}")
        self.directory, self.length = directory, sequence_length
        self.kind = Kind(self.index["kind"])
        self.pad = int(self.index["padTokenId"])
        self._dtypes = {
            "tokens": np.dtype(self.index["dtype"]),
            "docs": np.uint64,
            "mask": np.uint8,
        }
        self._shards = [Shard(**s) for s in self.index["shards"]]
        self._token_starts = list(np.cumsum([0] + [s.tokens for s in self._shards]).tolist())
        self._doc_starts = list(np.cumsum([0] + [s.documents for s in self._shards]).tolist())
        self._maps: OrderedDict[tuple[int, str], _Mapped] = OrderedDict()
        self._touched: dict[tuple[int, str], _Mapped] = {}  # read since the last release
        self._reads = 0

    def _read(
        self, shard: int, suffix: str, start: int, stop: int, dtype: npt.DTypeLike
    ) -> npt.NDArray[Any]:
        """Items [start, stop) of shard `shard`'s file `suffix`, as `dtype`; every
        RELEASE_EVERY reads, the files read since are released."""
        mapped = self._file(shard, suffix)
        out = mapped.read(start, stop, dtype)
        self._count_reads(shard, suffix, mapped, 1)
        return out

    def _count_reads(self, shard: int, suffix: str, mapped: _Mapped, reads: int) -> None:
        self._touched[(shard, suffix)] = mapped
        self._reads += reads
        if self._reads >= RELEASE_EVERY:
            for touched in self._touched.values():
                touched.release()
            self._touched.clear()
            self._reads = 0

    def _file(self, shard: int, suffix: str) -> _Mapped:
        """Shard `shard`'s file, mapped on first use; the least recently used mappings are
        closed beyond OPEN_MAPS, so a corpus of any number of shards stays within the
        process's limit on mappings."""
        name = (shard, suffix)
        if name in self._maps:
            self._maps.move_to_end(name)
            return self._maps[name]
        path = self.directory / f"{self._shards[shard].name}.{suffix}"
        mapped = self._maps[name] = _Mapped(path, self._dtypes[suffix])
        if len(self._maps) > OPEN_MAPS:
            closed, oldest = self._maps.popitem(last=False)
            self._touched.pop(closed, None)  # unmapped: nothing left to release
            oldest.close()
        return mapped

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocabSize"])

    def __len__(self) -> int:
        """Samples of `sequence_length`: windows of the stream, or documents."""
        if self.kind is Kind.TEXT:
            return int(self._token_starts[-1]) // self.length
        return int(self._doc_starts[-1])

    def _stream(self, start: int, stop: int) -> npt.NDArray[Any]:
        """Tokens [start, stop) of the whole stream, across shard boundaries, as int64."""
        parts = []
        shard = bisect.bisect_right(self._token_starts, start) - 1
        while start < stop:
            base, end = self._token_starts[shard], self._token_starts[shard + 1]
            take = min(stop, end)
            parts.append(self._read(shard, "tokens", start - base, take - base, np.int64))
            start, shard = take, shard + 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def samples(
        self, samples: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Input ids and labels of each sample of `samples`, stacked: [len(samples), length].
        Plain text samples are read in one gather per shard; one that runs across the end of
        a shard is read on its own."""
        wanted = np.asarray(samples, dtype=np.int64).reshape(-1)
        if len(wanted) and self.kind is Kind.TEXT and 0 <= wanted.min() <= wanted.max() < len(self):
            return self._text_samples(wanted)
        read = [self.sample(int(i)) for i in wanted]
        if not read:
            empty = np.zeros((0, self.length), dtype=np.int64)
            return empty, empty.copy()
        return np.stack([r[0] for r in read]), np.stack([r[1] for r in read])

    def _text_samples(
        self, wanted: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        starts = wanted * self.length
        bounds = np.asarray(self._token_starts, dtype=np.int64)
        shards = np.searchsorted(bounds, starts, side="right") - 1
        inside = starts + self.length <= bounds[shards + 1]
        ids = np.empty((len(wanted), self.length), dtype=np.int64)
        for shard in np.unique(shards[inside]).tolist():
            rows = np.flatnonzero(inside & (shards == shard))
            mapped = self._file(shard, "tokens")
            ids[rows] = mapped.gather(starts[rows] - bounds[shard], self.length)
            self._count_reads(shard, "tokens", mapped, len(rows))
        for row in np.flatnonzero(~inside).tolist():
            ids[row] = self._stream(int(starts[row]), int(starts[row]) + self.length)
        return ids, ids.copy()

    def sample(self, i: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Input ids and labels of sample `i`, both `sequence_length` long."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        if self.kind is Kind.TEXT:
            ids = self._stream(i * self.length, (i + 1) * self.length)
            return ids, ids.copy()
        shard = bisect.bisect_right(self._doc_starts, i) - 1
        d = i - self._doc_starts[shard]
        first, end = (int(x) for x in self._read(shard, "docs", d, d + 2, np.uint64))
        stop = min(end, first + self.length)
        tokens = self._read(shard, "tokens", first, stop, np.int64)
        mask = self._read(shard, "mask", first, stop, bool)
        ids = np.full(self.length, self.pad, np.int64)
        labels = np.full(self.length, IGNORE, np.int64)
        ids[: len(tokens)] = tokens
        labels[: len(tokens)] = np.where(mask, tokens, IGNORE)
        return ids, labels
