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

import torch

MASK64 = (1 << 64) - 1
ROUNDS = 4


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


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
