"""Which examples make up global batch number b: deterministic, resumable, skippable.

The order is a seeded permutation of the examples per epoch; global batch b takes the next
`global_batch_size` positions of that stream. A rank takes, for micro-step k of the batch, the
slice of micro-batch size at (k x ranks + rank). A checkpoint stores the number of global
batches consumed; a resume continues with the next one; a rollback skips whole batches by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.examples, generator=generator)

    def global_batch(self, index: int) -> torch.Tensor:
        """Example indexes of global batch `index` (all ranks)."""
        epoch, within = divmod(index, self.batches_per_epoch)
        start = within * self.global_batch_size
        return self._permutation(epoch)[start : start + self.global_batch_size]

    def micro_batches(self, index: int, rank: int) -> list[torch.Tensor]:
        """This rank's micro-batches of global batch `index`, in accumulation order."""
        batch = self.global_batch(index)
        size = self.micro_batch_size
        return [
            batch[(k * self.ranks + rank) * size : (k * self.ranks + rank + 1) * size]
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
