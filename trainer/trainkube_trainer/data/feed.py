"""This rank's training micro-batches, global batch by global batch.

The sampler's order and the split's permutation are computed one index at a time by design (no
list of all samples anywhere), which costs Python work per sample and per step. The feed computes
the dataset sample numbers of BLOCK global batches at a time, in one vectorised pass over both
permutations (the same numbers), and reads each micro-batch's tokens when it is asked for. A jump
(a resume, a rollback, skipped batches) starts a new block where the jump lands.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch

from trainkube_trainer.data.sampler import BatchSampler
from trainkube_trainer.datasets_split import Sequences

BLOCK = 256  # global batches whose sample numbers are computed together


class Feed:
    def __init__(
        self, sampler: BatchSampler, split: Sequences, rank: int, *, block: int = BLOCK
    ) -> None:
        self.sampler, self.split, self.rank, self.block = sampler, split, rank, block
        self._first = 0
        self._samples: npt.NDArray[np.int64] = np.empty((0, 0, 0), dtype=np.int64)

    def samples(self, index: int) -> npt.NDArray[np.int64]:
        """The dataset sample numbers of this rank's micro-batches of global batch `index`:
        [accumulation, micro-batch]."""
        if not self._first <= index < self._first + len(self._samples):
            block = self.sampler.micro_batch_block(index, self.block, self.rank)
            self._first, self._samples = index, self.split.dataset_samples(block)
        samples: npt.NDArray[np.int64] = self._samples[index - self._first]
        return samples

    def micro_batches(self, index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Input ids and labels of this rank's micro-batches of global batch `index`, in
        accumulation order."""
        for samples in self.samples(index):
            yield self.split.read(samples)
