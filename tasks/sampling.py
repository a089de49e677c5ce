"""Seeded minibatches: each pass over the data is a fresh permutation."""

from __future__ import annotations

import numpy as np
import torch

from .base import Batch


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch generator seeded from integer keys, e.g. (seed, round, partition)."""
    state = np.random.SeedSequence([abs(int(k)) for k in keys]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class MinibatchSampler:
    """Calls return successive minibatches of ``batch_size`` (the whole set if smaller).

    Every batch carries ``ids``: the positions of its samples within ``data`` (tasks with
    per-sample parameters index them with it).
    """

    def __init__(self, data: Batch, batch_size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.generator = generator
        self.device = device
        self._order = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def __call__(self) -> Batch:
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.data), generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return Batch(self.data.inputs[idx], self.data.labels[idx], ids=idx,
                     logit_offset=self.data.logit_offset).to(self.device)
