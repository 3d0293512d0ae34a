"""The trainer's feed: the vectorised permutations give the scalar ones' numbers, and the feed
reads exactly the micro-batches the sampler and the split name, across blocks, epochs and jumps;
the mapped shard files release what their reads touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainkube.api.data import BuiltinCorpus
from trainkube.runconfig import DataRef
from trainkube_trainer.data import feed as feed_module
from trainkube_trainer.data import tokens
from trainkube_trainer.data.feed import Feed
from trainkube_trainer.data.prepare import prepare
from trainkube_trainer.data.sampler import BatchSampler, Permutation, key
from trainkube_trainer.data.source import record_batches
from trainkube_trainer.data.tokens import Kind, TokenDataset, TokenWriter
from trainkube_trainer.datasets_split import split
from trainkube_trainer.tokenizer import byte_tokenizer

STORIES = DataRef(builtin=BuiltinCorpus.TINY_STORIES, sequence_length=64)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 1000, 4097, 65537])
def test_the_vectorised_permutation_gives_the_scalar_ones_numbers(size: int) -> None:
    permutation = Permutation(size, key(11, size))
    positions = np.arange(size) if size < 5000 else np.arange(0, size, 7)
    assert permutation.many(positions).tolist() == [permutation(int(i)) for i in positions]


def test_the_vectorised_permutation_refuses_positions_outside_it() -> None:
    with pytest.raises(IndexError, match="of 10"):
        Permutation(10, 1).many(np.array([3, 10]))


def test_a_block_of_micro_batches_is_what_the_sampler_gives_batch_by_batch() -> None:
    sampler = BatchSampler(examples=1000, global_batch_size=16, micro_batch_size=4, ranks=2, seed=3)
    first = sampler.batches_per_epoch - 5  # the block spans an epoch boundary
    for rank in range(2):
        block = sampler.micro_batch_block(first, 12, rank)
        assert block.shape == (12, sampler.accumulation, 4)
        for b in range(12):
            expected = [m.tolist() for m in sampler.micro_batches(first + b, rank)]
            assert block[b].tolist() == expected


BATCH_BYTES = 2 * 4 * 64 * 16  # a rank's share of one global batch: ids and labels, int64


@pytest.mark.parametrize(
    ("chunk_bytes", "chunk"), [(1, 1), (3 * BATCH_BYTES, 3), (feed_module.CHUNK_BYTES, 4)]
)
def test_the_feed_reads_the_samplers_micro_batches_across_blocks_chunks_and_jumps(
    tmp_path: Path, chunk_bytes: int, chunk: int
) -> None:
    """Chunks of 1, 3 (across the blocks of 4) and 4 global batches (the block's)."""
    prepare(record_batches(STORIES), byte_tokenizer(), tmp_path, data=STORIES)
    train, _ = split(TokenDataset(tmp_path, sequence_length=64), validation_fraction=0.05, seed=3)
    sampler = BatchSampler(
        examples=len(train), global_batch_size=16, micro_batch_size=4, ranks=2, seed=5
    )
    feed = Feed(sampler, train, rank=1, block=4, chunk_bytes=chunk_bytes)
    assert feed.chunk == chunk
    # in order over two blocks, a jump back (a rollback), a jump ahead (skipped batches)
    for index in [*range(0, 6), 2, 3, 40, 41, sampler.batches_per_epoch]:
        read = list(feed.micro_batches(index))
        expected = [train.batch(m.tolist()) for m in sampler.micro_batches(index, 1)]
        assert len(read) == len(expected) == sampler.accumulation
        for (ids, labels), (want_ids, want_labels) in zip(read, expected, strict=True):
            assert torch.equal(ids, want_ids)
            assert torch.equal(labels, want_labels)


def test_the_feed_reads_a_chunk_of_global_batches_in_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(record_batches(STORIES), byte_tokenizer(), tmp_path, data=STORIES)
    train, _ = split(TokenDataset(tmp_path, sequence_length=64), validation_fraction=0.05, seed=3)
    sampler = BatchSampler(
        examples=len(train), global_batch_size=16, micro_batch_size=4, ranks=2, seed=5
    )
    feed = Feed(sampler, train, rank=0, block=8, chunk_bytes=4 * BATCH_BYTES)
    reads: list[int] = []
    read = train.dataset.samples

    def counted(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reads.append(len(samples))
        return read(samples)

    monkeypatch.setattr(train.dataset, "samples", counted)
    for index in range(8):
        assert len(list(feed.micro_batches(index))) == sampler.accumulation
    assert reads == [4 * sampler.accumulation * 4] * 2  # batches 0-3, then 4-7


def _file_backed_rss_mib() -> float:
    """This process's resident pages of mapped files now (RssFile), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_reads_of_mapped_shards_release_the_pages_they_touched(tmp_path: Path) -> None:
    """Reading every sample of 64 MiB of tokens in four shards never holds more than the
    reads since the last release resident (the shards unreleased would be all 64 MiB)."""
    writer = TokenWriter(
        tmp_path,
        kind=Kind.TEXT,
        vocab_size=1 << 16,
        eos_token_id=1,
        pad_token_id=0,
        metadata={},
        shard_tokens=1 << 23,
    )
    for _ in range(4):
        writer.add(np.arange(1 << 23) % (1 << 16), np.array([1 << 23]))
    writer.close()
    dataset = TokenDataset(tmp_path, sequence_length=4096)
    assert len(dataset) == 8192
    base, peak = _file_backed_rss_mib(), 0.0
    for i in range(len(dataset)):
        ids, _ = dataset.sample(i)
        assert ids[0] == (i * 4096) % (1 << 16)
        if i % 100 == 0:
            peak = max(peak, _file_backed_rss_mib() - base)
    bound = tokens.RELEASE_EVERY * (4096 * 2 + 2 * tokens.FAULT_AROUND) / (1 << 20)
    assert peak <= bound + 1 < 16
