"""The local search of :mod:`rabo_pruning.placement`: coverage counts of a partial placement of
windows, kept up to date as single windows are put and taken, and the best-response move of one
window (every start of it scored at once)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks import LayerSpec
from tasks.structure import Structure

from .coverage import Block, Objective, as_structure, blocks, kept_units

Score = tuple[int, ...]


def _indicator(width: int, keep: int, start: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.int64)
    out[(start + np.arange(keep)) % width] = 1
    return out


def _all_windows(width: int, keep: int) -> np.ndarray:
    """(start, unit) indicator of every window of ``keep`` units."""
    return np.stack([_indicator(width, keep, s) for s in range(width)])


class WindowSearch:
    """Coverage counts of a partial placement and the best-response move of one window."""

    def __init__(self, layers: Structure | Sequence[LayerSpec], ratios: Sequence[float], objective: Objective,
                 pinned: np.ndarray) -> None:
        self.widths = [group.width for group in as_structure(layers).groups]
        self.blocks = [b for b in blocks(layers) if b.out is not None or b.inp is not None]
        self.n = len(ratios)
        self.roles = ("x", "y") if objective == "x-first" else ("y", "x")
        self.keep = np.array([[kept_units(w, r) for w in self.widths] for r in ratios], dtype=np.int64)
        self.pinned = pinned
        self.starts = np.zeros((self.n, len(self.widths)), dtype=np.int64)
        self.placed = np.zeros((self.n, len(self.widths)), dtype=bool)
        self.units = [np.zeros(w, dtype=np.int64) for w in self.widths]
        self.pairs = {j: np.zeros((self.widths[b.out], self.widths[b.inp]), dtype=np.int64)
                      for j, b in enumerate(self.blocks) if b.out is not None and b.inp is not None}
        self._windows: dict[tuple[int, int], np.ndarray] = {}
        self.units_first = False

    def windows(self, p: int, keep: int) -> np.ndarray:
        if (p, keep) not in self._windows:
            self._windows[(p, keep)] = _all_windows(self.widths[p], keep)
        return self._windows[(p, keep)]

    def fixed(self, n: int, p: int) -> bool:
        """Client n's window in layer p is not searched: pinned, or the whole layer."""
        return bool(self.pinned[n, p] or self.keep[n, p] >= self.widths[p])

    def indicator(self, n: int, p: int) -> np.ndarray:
        return self.windows(p, int(self.keep[n, p]))[self.starts[n, p]]

    def _apply(self, n: int, p: int, sign: int) -> None:
        """Add (+1) or remove (-1) client n's contributions that involve its window in layer p."""
        ind = self.indicator(n, p)
        self.units[p] += sign * ind
        for j, b in enumerate(self.blocks):
            if j not in self.pairs:
                continue
            if b.out == p and self.placed[n, b.inp]:
                self.pairs[j] += sign * np.outer(ind, self.indicator(n, b.inp))
            elif b.inp == p and self.placed[n, b.out]:
                self.pairs[j] += sign * np.outer(self.indicator(n, b.out), ind)

    def put(self, n: int, p: int, start: int) -> None:
        self.starts[n, p] = start
        self.placed[n, p] = True
        self._apply(n, p, +1)

    def take(self, n: int, p: int) -> None:
        self._apply(n, p, -1)
        self.placed[n, p] = False

    def _block_low(self, j: int, b: Block, n: int | None = None, p: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(minimum, entries at it) of block j, per start of client n's window in layer p (with n's
        window in p taken out), or as it stands (arrays of one element) when p is None."""
        if j in self.pairs:
            pairs = self.pairs[j][None]
            if p is not None and n is not None and b.out == p and self.placed[n, b.inp]:
                pairs = pairs + self.windows(p, int(self.keep[n, p]))[:, :, None] \
                    * self.indicator(n, b.inp)[None, None, :]
            elif p is not None and n is not None and b.inp == p and self.placed[n, b.out]:
                pairs = pairs + self.indicator(n, b.out)[None, :, None] \
                    * self.windows(p, int(self.keep[n, p]))[:, None, :]
            flat = pairs.reshape(pairs.shape[0], -1)
            low = flat.min(axis=1)
            return low, (flat == low[:, None]).sum(axis=1)
        side = b.out if b.out is not None else b.inp
        assert side is not None
        units = self.units[side][None]
        if p is not None and n is not None and side == p:
            units = units + self.windows(p, int(self.keep[n, p]))
        low = units.min(axis=1)
        scale = 1 if b.out is not None else b.rows
        return low, scale * (units == low[:, None]).sum(axis=1)

    def scores(self, n: int | None = None, p: int | None = None) -> np.ndarray:
        """Rows of (first minimum, second minimum, -entries at the first minimum, -entries at the
        second, first units' minimum, second units' minimum, -units at the first units' minimum,
        -units at the second's); with ``units_first`` the unit criteria come right after the minima
        (the final polish: the fewest clients on any output unit, and fewer units there, since a
        unit nobody trains is a dead channel)."""
        size = self.widths[p] if p is not None else 1
        low = {r: np.full(size, self.n, dtype=np.int64) for r in ("x", "y")}
        units = {r: np.full(size, self.n, dtype=np.int64) for r in ("x", "y")}
        at_units = {r: np.zeros(size, dtype=np.int64) for r in ("x", "y")}
        count = {r: np.zeros(size, dtype=np.int64) for r in ("x", "y")}
        for j, b in enumerate(self.blocks):
            m, c = self._block_low(j, b, n, p)
            m, c = np.broadcast_to(m, size), np.broadcast_to(c, size)
            r = b.role
            count[r] = np.where(m < low[r], c, np.where(m == low[r], count[r] + c, count[r]))
            low[r] = np.minimum(low[r], m)
            if b.out is not None:
                own = self.units[b.out][None]
                if p is not None and n is not None and b.out == p:
                    own = own + self.windows(p, int(self.keep[n, p]))
                u_low = own.min(axis=1)
                u_at = (own == u_low[:, None]).sum(axis=1)
                u_low, u_at = np.broadcast_to(u_low, size), np.broadcast_to(u_at, size)
                at_units[r] = np.where(u_low < units[r], u_at,
                                       np.where(u_low == units[r], at_units[r] + u_at, at_units[r]))
                units[r] = np.minimum(units[r], u_low)
        a, z = self.roles
        if self.units_first:
            return np.stack([low[a], low[z], units[a], units[z], -at_units[a], -at_units[z],
                             -count[a], -count[z]], axis=1)
        return np.stack([low[a], low[z], -count[a], -count[z], units[a], units[z], -at_units[a],
                         -at_units[z]], axis=1)

    def score(self) -> Score:
        return tuple(int(v) for v in self.scores()[0])  # type: ignore[return-value]

    def best_start(self, n: int, p: int, prefer: int) -> tuple[int, np.ndarray]:
        """The start that scores best for client n's window in layer p (n's window in p taken out);
        ties go to the first start at or after ``prefer`` (cyclically)."""
        scores = self.scores(n, p)
        width = self.widths[p]
        distance = (np.arange(width) - prefer) % width
        order = np.lexsort((distance, *(-scores[:, k] for k in reversed(range(scores.shape[1])))))
        return int(order[0]), scores

    def improve(self, max_sweeps: int = 50) -> None:
        """Best-response local search: move single windows while the score strictly improves."""
        for _ in range(max_sweeps):
            moved = False
            for n in range(self.n):
                for p in range(len(self.widths)):
                    if self.fixed(n, p):
                        continue
                    current = int(self.starts[n, p])
                    self.take(n, p)
                    best, scores = self.best_start(n, p, current)
                    if tuple(scores[best]) > tuple(scores[current]):
                        current, moved = best, True
                    self.put(n, p, current)
            if not moved:
                return

