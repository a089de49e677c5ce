"""Per-coordinate aggregation over the clients that covered each coordinate.

``mean`` (the default): the average weighted by num-examples. ``median`` and ``trimmed-mean``
(robust, unweighted, so an inflated num-examples buys nothing): per coordinate, over the C clients
that covered it, the median, or the mean after dropping the floor(trim * C) largest and smallest
values. A coordinate covered by C clients then tolerates floor((C - 1) / 2) (median) or
floor(trim * C) (trimmed mean) arbitrary values: partial coverage is what limits any
per-coordinate rule, since a coordinate only one client covers tolerates none.

The classifier's rows (one per class, in y and v) can be weighted per class (``head-rows``,
:data:`HeadRows`): ``covered`` averages a row over every client that covered it, by num-examples, like
any coordinate; ``holders`` over the clients that hold the class only (HeteroFL's masked aggregation:
a client without samples of class c moved row c through the softmax normaliser and the ridge term
alone), by num-examples; ``class-balanced`` over the holders too, each weighted by its number of
samples of the class, so that a row is the average of the class's own data wherever it lives. The
strategy turns a client's class counts into rows and weights (``rabo_strategy.replies.class_rows``);
:meth:`CoverageAverage.add` takes per-row weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

import numpy as np

from .submodel import SliceIndex

Aggregation = Literal["mean", "median", "trimmed-mean"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
HeadRows = Literal["covered", "holders", "class-balanced"]


class CoverageAverage:
    """Accumulates sliced client tensors into full-size sums, weights and coverage counts."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]],
                 rule: Aggregation = "mean", trim: float = 0.2) -> None:
        if rule not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation '{rule}'; allowed: {', '.join(AGGREGATIONS)}")
        self.rule, self.trim = rule, trim
        self._clients: list[tuple[Mapping[str, np.ndarray], Mapping[str, SliceIndex]]] = []
        self.sums = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.weights = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.counts = {k: np.zeros(s, dtype=np.int64) for k, s in shapes.items()}
        self.lazy = {k: np.zeros(s, dtype=np.int64) for k, s in shapes.items()}
        """Per coordinate, the added clients that returned it exactly as sent (averaged, counted in
        the mask coverage, not in the trained coverage)."""

    def add(self, values: Mapping[str, np.ndarray], index: Mapping[str, SliceIndex],
            weight: float, row_weights: Mapping[str, np.ndarray] | None = None,
            untrained: Mapping[str, SliceIndex] | None = None) -> None:
        """Add one client's slices (``values[k]`` sits at ``index[k]``) with ``weight``; a key of
        ``row_weights`` takes its per-row weights (first axis of ``values[k]``, positive) instead.
        The coordinates at ``untrained[k]`` it returned exactly as sent: averaged, but left out of
        :meth:`min_trained` and :meth:`covered_fraction_below`."""
        for key, idx in (untrained or {}).items():
            idx.add_into(self.lazy[key], np.ones(idx.shape(self.lazy[key].shape), dtype=np.int64))
        if self.rule != "mean":
            self._clients.append((values, index))
        row_weights = row_weights or {}
        for key, value in values.items():
            idx = index[key]
            if key in row_weights:
                rows = np.asarray(row_weights[key], dtype=np.float64)
                w = np.broadcast_to(rows.reshape(-1, *([1] * (value.ndim - 1))), value.shape)
            else:
                w = np.full(value.shape, weight)
            idx.add_into(self.sums[key], w * value.astype(np.float64))
            idx.add_into(self.weights[key], w)
            idx.add_into(self.counts[key], np.ones(value.shape, dtype=np.int64))

    def _trained(self, key: str) -> np.ndarray:
        return self.counts[key] - self.lazy[key]

    def average(self, previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rule's value where covered; ``previous`` where no client covered a coordinate."""
        out = {}
        for key, prev in previous.items():
            covered = self.weights[key] > 0
            if self.rule == "mean":
                value = np.divide(self.sums[key], self.weights[key], out=np.zeros_like(self.sums[key]),
                                  where=covered)
            else:
                value = self._robust(key, prev.shape)
            out[key] = np.where(covered, value, prev).astype(prev.dtype)
        return out

    def _robust(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """Median or trimmed mean per coordinate over the clients that covered it (NaN elsewhere)."""
        stack = np.full((len(self._clients), *shape), np.nan)
        for i, (values, index) in enumerate(self._clients):
            if key in values:
                value = np.zeros(shape)
                index[key].add_into(value, values[key].astype(np.float64))
                mask = np.zeros(shape, dtype=np.int64)
                index[key].add_into(mask, np.ones(values[key].shape, dtype=np.int64))
                stack[i] = np.where(mask > 0, value, np.nan)
        counts = self.counts[key]
        if not len(self._clients):
            return np.zeros(shape)
        ordered = np.sort(stack, axis=0)  # NaN (not covered) sorts last
        ranks = np.arange(len(self._clients)).reshape(-1, *([1] * len(shape)))
        if self.rule == "median":
            low, high = (counts - 1) // 2, counts // 2  # the middle one or two of the C values
            keep = (ranks == low) | (ranks == high)
        else:
            cut = np.floor(self.trim * counts).astype(np.int64)
            keep = (ranks >= cut) & (ranks < counts - cut)
        kept = np.where(keep, ordered, 0.0)
        number = keep.sum(axis=0)
        return np.divide(kept.sum(axis=0), number, out=np.zeros(shape), where=number > 0)

    def tolerated(self, keys: Iterable[str]) -> int:
        """The fewest arbitrary client values any coordinate of ``keys`` tolerates under the rule."""
        low = self.min_coverage(keys)
        if self.rule == "median":
            return max((low - 1) // 2, 0)
        if self.rule == "trimmed-mean":
            return math.floor(self.trim * low)
        return 0

    def min_coverage(self, keys: Iterable[str]) -> int:
        """C*: the smallest number of clients that covered any coordinate of ``keys``."""
        return min((int(self.counts[k].min()) for k in keys), default=0)

    def min_trained(self, keys: Iterable[str]) -> int:
        """Like :meth:`min_coverage`, counting only the clients that changed the coordinate."""
        return min((int(self._trained(k).min()) for k in keys), default=0)

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

    def covered_fraction_below(self, coverage: int) -> float:
        """Of the coordinates some client covered, the fraction fewer than ``coverage`` clients did."""
        trained = [self._trained(k) for k in self.counts]
        covered = sum(int(np.count_nonzero(c)) for c in trained)
        below = sum(int(np.count_nonzero((c > 0) & (c < coverage))) for c in trained)
        return below / covered if covered else 0.0
