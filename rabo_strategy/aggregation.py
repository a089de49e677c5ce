"""Per-coordinate weighted averaging over the clients that covered each coordinate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .submodel import SliceIndex


class CoverageAverage:
    """Accumulates sliced client tensors into full-size sums, weights and coverage counts."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.sums = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.weights = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.counts = {k: np.zeros(s, dtype=np.int64) for k, s in shapes.items()}

    def add(self, values: Mapping[str, np.ndarray], index: Mapping[str, SliceIndex],
            weight: float) -> None:
        """Add one client's slices (``values[k]`` sits at ``index[k]``) with ``weight``."""
        for key, value in values.items():
            idx = index[key]
            idx.add_into(self.sums[key], weight * value.astype(np.float64))
            idx.add_into(self.weights[key], np.full(value.shape, weight))
            idx.add_into(self.counts[key], np.ones(value.shape, dtype=np.int64))

    def average(self, previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Weighted average where covered; ``previous`` where no client covered a coordinate."""
        out = {}
        for key, prev in previous.items():
            covered = self.weights[key] > 0
            avg = np.divide(self.sums[key], self.weights[key], out=np.zeros_like(self.sums[key]),
                            where=covered)
            out[key] = np.where(covered, avg, prev).astype(prev.dtype)
        return out

    def min_coverage(self, keys: Iterable[str]) -> int:
        """C*: the smallest number of clients that covered any coordinate of ``keys``."""
        return min((int(self.counts[k].min()) for k in keys), default=0)

    def mean_coverage(self, keys: Iterable[str]) -> float:
        keys = list(keys)
        total = sum(int(self.counts[k].sum()) for k in keys)
        size = sum(self.counts[k].size for k in keys)
        return total / size if size else 0.0

    def covered_fraction(self, keys: Iterable[str]) -> float:
        """Fraction of the coordinates of ``keys`` that at least one client covered."""
        keys = list(keys)
        covered = sum(int(np.count_nonzero(self.counts[k])) for k in keys)
        size = sum(self.counts[k].size for k in keys)
        return covered / size if size else 0.0
