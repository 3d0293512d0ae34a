"""Which samples make up global batch number b: deterministic, resumable, skippable, and the
same whatever the number of ranks.

The order is a seeded pseudo-random permutation of the samples per epoch, computed one index at
a time (a Feistel network over the next power of four, walking cycles until the result is in
range): any position of any epoch is found in constant time and memory, with no list of all
samples anywhere. Global batch b takes positions [b x G, (b + 1) x G) of its epoch (G the global
batch size; the last partial batch of an epoch is dropped). A rank takes, for micro-step k of
the batch, the micro-batch slice at (k x ranks + rank). A checkpoint stores the number of global
batches consumed; a resume continues with the next one, on any number of ranks (the global batch
size stays the same, so batch b holds the same samples); a rollback skips whole batches by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

MASK64 = (1 << 64) - 1
ROUNDS = 4


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


Words = npt.NDArray[np.uint64]


def _mix_many(x: Words) -> Words:
    """`_mix` of every element (uint64 arithmetic wraps as `& MASK64` does)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class Permutation:
    """A bijection of range(size) chosen by `key`; `self(i)` is where position i goes."""

    size: int
    key: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a permutation of nothing")

    @property
    def _half_bits(self) -> int:
        bits = max(2, (self.size - 1).bit_length())
        return (bits + 1) // 2

    def __call__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError(f"position {position} of {self.size}")
        half = self._half_bits
        mask = (1 << half) - 1
        x = position
        while True:  # cycle-walking: at most a few rounds, the domain is < 4 x size
            left, right = x >> half, x & mask
            for round_ in range(ROUNDS):
                key = _mix(self.key ^ _mix(round_ << 32 | right))
                left, right = right, left ^ (key & mask)
            x = left << half | right
            if x < self.size:
                return x

    def _rounds(self, x: Words) -> Words:
        half = np.uint64(self._half_bits)
        mask = np.uint64((1 << self._half_bits) - 1)
        left, right = x >> half, x & mask
        for round_ in range(ROUNDS):
            mixed = _mix_many(np.uint64(self.key) ^ _mix_many(np.uint64(round_ << 32) | right))
            left, right = right, left ^ (mixed & mask)
        return (left << half) | right

    def many(self, positions: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """`self(i)` of every position, in one vectorised pass (the same values)."""
        wanted = np.asarray(positions, dtype=np.int64)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.size):
            raise IndexError(f"positions {wanted.min()}..{wanted.max()} of {self.size}")
        x = self._rounds(wanted.astype(np.uint64))
        outside = x >= np.uint64(self.size)
        while outside.any():  # cycle-walking, as in __call__
            x[outside] = self._rounds(x[outside])
            outside = x >= np.uint64(self.size)
        return x.astype(np.int64)


def key(*parts: int) -> int:
    """A permutation key from integers (a seed, an epoch, a purpose)."""
    out = 0
    for part in parts:
        out = _mix(out ^ (part & MASK64))
    return out


@dataclass(frozen=True)
class BatchSampler:
    examples: int
    global_batch_size: int
    micro_batch_size: int
    ranks: int
    seed: int

    def __post_init__(self) -> None:
        if self.global_batch_size % (self.micro_batch_size * self.ranks):
            raise ValueError("global batch must be micro-batch x ranks x accumulation")
        if self.examples < self.global_batch_size:
            raise ValueError(
                f"{self.examples} training sequences are fewer than one global batch "
                f"({self.global_batch_size}): use a smaller globalBatchSize or more data"
            )

    @property
    def accumulation(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.ranks)

    @property
    def batches_per_epoch(self) -> int:
        return self.examples // self.global_batch_size

    def sample(self, position: int) -> int:
        """The example at global position `position` of the whole run (all epochs): epoch e
        holds positions [e x batches_per_epoch x G, (e + 1) x batches_per_epoch x G)."""
        per_epoch = self.batches_per_epoch * self.global_batch_size
        epoch, within = divmod(position, per_epoch)
        return Permutation(self.examples, key(self.seed, epoch))(within)

    def samples(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """`sample` of every global position, in one vectorised pass per epoch they span."""
        per_epoch = self.batches_per_epoch * self.global_batch_size
        epochs, within = np.divmod(positions, per_epoch)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            at = epochs == epoch
            out[at] = Permutation(self.examples, key(self.seed, int(epoch))).many(within[at])
        return out

    def micro_batch_block(self, first: int, count: int, rank: int) -> npt.NDArray[np.int64]:
        """This rank's micro-batches of global batches `first` .. `first + count - 1`, as
        `micro_batches` gives them one batch at a time: [count, accumulation, micro-batch]."""
        batch = np.arange(first, first + count, dtype=np.int64)[:, None, None]
        step = np.arange(self.accumulation, dtype=np.int64)[None, :, None]
        within = np.arange(self.micro_batch_size, dtype=np.int64)[None, None, :]
        positions = (
            batch * self.global_batch_size
            + (step * self.ranks + rank) * self.micro_batch_size
            + within
        )
        return self.samples(positions)

    def global_batch(self, index: int) -> torch.Tensor:
        """Example indexes of global batch `index` (all ranks)."""
        start = index * self.global_batch_size
        return torch.tensor([self.sample(p) for p in range(start, start + self.global_batch_size)])

    def micro_batches(self, index: int, rank: int) -> list[torch.Tensor]:
        """This rank's micro-batches of global batch `index`, in accumulation order: only the
        rank's own samples are computed."""
        start, size = index * self.global_batch_size, self.micro_batch_size
        return [
            torch.tensor(
                [self.sample(start + (k * self.ranks + rank) * size + j) for j in range(size)]
            )
            for k in range(self.accumulation)
        ]


def next_batch_index(position: int, skip: list[tuple[int, int]]) -> int:
    """The first batch index at or after `position` outside every [start, end) in `skip`."""
    moved = True
    while moved:
        moved = False
        for start, end in skip:
            if start <= position < end:
                position, moved = end, True
    return position
