"""Where each client's window sits in each prunable layer, so that the round's coverage is high.

A *placement* gives every client, in every prunable layer, a cyclic window of
``kept_units(width, ratio)`` consecutive units (the start is the only choice). A coordinate of a
layer's weight matrix is trained by the clients that keep both its output unit and its input unit
(all outputs of a layer that is not pruned, all inputs of a layer whose input is not pruned), so

- a prunable layer after a prunable one: coordinate (u, u') is covered by the clients whose windows
  hold u in this layer and u' in the previous one (a rectangle on the torus of unit pairs);
- a prunable layer after an unpruned input: unit u is covered by the windows that hold u;
- an unpruned layer after a prunable one (the classifier head): input unit u' likewise;
- an unpruned layer after an unpruned one: every client.

C_x* and C_y* are the minima of these counts over the layers of role x and y (a bias entry is
covered at least as often as its row of the weight matrix, so it never sets the minimum).

:func:`place` maximises (C_x*, C_y*) lexicographically (``objective='x-first'``) or (C_y*, C_x*)
(``'y-first'``), then fewer coordinates at each minimum; a final pass keeps (C_x*, C_y*) and
raises the minimum coverage of the layers' output units, so that no channel is left untrained
where the budgets allow. It is a heuristic:
a greedy construction (largest client first, each window where it raises the objective most)
followed by best-response local search (move one window at a time while the objective strictly
improves) from that start, from the wrap-around placement and from ``RESTARTS`` seeded random ones,
stopping early at the bounds (then it is optimal). ``tests/test_placement.py`` checks it against an
exact integer programme on random mixes of up to 6 clients and widths up to 8 (300 of 300 optimal
in ``benchmarks/placement.py``), which also measures it on the real widths: both bounds reached in
26 of 34 cases, one client below a bound in one role in the others (the optimum there is unknown).
:func:`coverage_bounds` gives upper bounds that hold for any choice of kept units, windows or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from tasks import LayerSpec

Objective = Literal["x-first", "y-first"]
COVERAGE_OBJECTIVES: tuple[Objective, ...] = ("x-first", "y-first")
Score = tuple[int, ...]


def kept_units(width: int, ratio: float) -> int:
    """Units a layer keeps at ``ratio``: ceil(ratio * width), at least 1."""
    return max(1, math.ceil(ratio * width - 1e-9))


@dataclass(frozen=True)
class Block:
    """The weight matrix of one layer, as far as coverage goes.

    ``out`` / ``inp``: position among the prunable layers of the layer's output side / of the
    previous layer feeding it, or ``None`` when that side keeps every unit.
    """

    role: str
    out: int | None
    inp: int | None
    rows: int  # output units of the layer (the multiplicity of an input-only block's entries)


def blocks(layers: Sequence[LayerSpec]) -> list[Block]:
    prunable = {layer.name: p for p, layer in enumerate(x for x in layers if x.prunable)}
    out: list[Block] = []
    for i, layer in enumerate(layers):
        previous = layers[i - 1] if i > 0 else None
        out.append(Block(layer.role, prunable.get(layer.name),
                         prunable.get(previous.name) if previous is not None else None, layer.width))
    return out


def coverage_bounds(layers: Sequence[LayerSpec], ratios: Sequence[float]) -> tuple[int, int]:
    """Upper bounds on (C_x*, C_y*) over every choice of kept units (windows or arbitrary sets).

    A coordinate of a layer with pruned outputs and pruned inputs is covered sum_i k_i k'_i times in
    total over its W W' entries, so its minimum is at most floor(sum_i k_i k'_i / (W W')), with
    k_i = ceil(r_i W) (the rounding matters: 20 clients at r = 0.2 on 16 x 32 units give 1, where
    floor(sum r_i^2) = 0). A layer pruned on one side only: floor(sum_i k_i / W). Neither: the number
    of clients. Role x's bound is the smallest over its layers; a role without layers gets the
    number of clients.
    """
    widths = [layer.width for layer in layers if layer.prunable]
    kept = [[kept_units(w, r) for w in widths] for r in ratios]
    bound = {"x": len(ratios), "y": len(ratios)}
    for block in blocks(layers):
        if block.out is not None and block.inp is not None:
            b = sum(k[block.out] * k[block.inp] for k in kept) // (widths[block.out] * widths[block.inp])
        elif block.out is not None or block.inp is not None:
            side = block.out if block.out is not None else block.inp
            assert side is not None
            b = sum(k[side] for k in kept) // widths[side]
        else:
            b = len(ratios)
        bound[block.role] = min(bound[block.role], b)
    return bound["x"], bound["y"]


def window(width: int, keep: int, start: int) -> np.ndarray:
    """The sorted units of the cyclic window of ``keep`` units starting at ``start``."""
    return np.sort((start + np.arange(keep)) % width)


def _indicator(width: int, keep: int, start: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.int64)
    out[(start + np.arange(keep)) % width] = 1
    return out


def _all_windows(width: int, keep: int) -> np.ndarray:
    """(start, unit) indicator of every window of ``keep`` units."""
    return np.stack([_indicator(width, keep, s) for s in range(width)])


def coverage_of(layers: Sequence[LayerSpec], ratios: Sequence[float], kept: Sequence[Sequence[np.ndarray]]
                ) -> tuple[int, int]:
    """(C_x*, C_y*) of any kept-unit sets: ``kept[client][p]`` = units of the p-th prunable layer."""
    widths = [layer.width for layer in layers if layer.prunable]
    n = len(ratios)
    low = {"x": n, "y": n}
    for block in blocks(layers):
        if block.out is None and block.inp is None:
            continue
        total: np.ndarray | int = 0
        for units in kept:
            out = np.zeros(widths[block.out] if block.out is not None else 1, dtype=np.int64)
            out[units[block.out] if block.out is not None else 0] = 1
            inp = np.zeros(widths[block.inp] if block.inp is not None else 1, dtype=np.int64)
            inp[units[block.inp] if block.inp is not None else 0] = 1
            total = total + np.outer(out, inp)
        low[block.role] = min(low[block.role], int(np.min(total)))
    return low["x"], low["y"]


class _Search:
    """Coverage counts of a partial placement and the best-response move of one window."""

    def __init__(self, layers: Sequence[LayerSpec], ratios: Sequence[float], objective: Objective,
                 pinned: np.ndarray) -> None:
        self.widths = [layer.width for layer in layers if layer.prunable]
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


Choose = Callable[[_Search, int, int, int], int]
"""(search, client, prunable layer, the unit after that layer's previous window) -> a start."""


def _construct(search: _Search, choose: Choose) -> None:
    """Place clients in order (largest first), each free window where ``choose`` says; pinned
    and full-width windows start at 0."""
    cursor = [0] * len(search.widths)
    for n in range(search.n):
        for p in range(len(search.widths)):
            if search.fixed(n, p):
                search.put(n, p, 0)
                continue
            start = choose(search, n, p, cursor[p])
            search.put(n, p, start)
            cursor[p] = (start + int(search.keep[n, p])) % search.widths[p]


def _greedy(search: _Search) -> None:
    """Each window where the partial placement scores best; ties go to the unit after the
    previously placed window of that layer (wrap-around)."""
    _construct(search, lambda s, n, p, cursor: s.best_start(n, p, cursor)[0])


def _wrap_around(search: _Search) -> None:
    """Each layer on its own: every window starts where the previous client's ended."""
    _construct(search, lambda s, n, p, cursor: cursor)


@dataclass(frozen=True)
class Placement:
    """Window starts per client (in the given order) and prunable layer, and the placement's score."""

    starts: np.ndarray
    coverage: tuple[int, int]  # (C_x*, C_y*)


RESTARTS = 24
"""Random starting placements searched after the greedy and wrap-around ones, unless one of those
already reaches :func:`coverage_bounds` (then it is optimal)."""


def _random_start(search: _Search, rng: np.random.Generator) -> None:
    _construct(search, lambda s, n, p, cursor: int(rng.integers(s.widths[p])))


@lru_cache(maxsize=256)
def _place(layers: tuple[LayerSpec, ...], ratios: tuple[float, ...], objective: Objective,
           pinned: tuple[tuple[bool, ...], ...]) -> Placement:
    bounds = coverage_bounds(layers, ratios)
    target = bounds if objective == "x-first" else (bounds[1], bounds[0])
    pins = np.array(pinned, dtype=bool).reshape(len(ratios), -1)
    rng = np.random.default_rng([len(ratios), *(round(r * 1e6) for r in ratios)])
    starts = [_greedy, _wrap_around] + [lambda s: _random_start(s, rng)] * RESTARTS
    best: _Search | None = None
    for construct in starts:
        search = _Search(layers, ratios, objective, pins)
        construct(search)
        search.improve()
        if best is None or search.score() > best.score():
            best = search
        if best.score()[:2] == target:
            break
    assert best is not None
    best.units_first = True  # polish: keep (C_x*, C_y*), leave no output unit untrained if possible
    best.improve()
    low = best.scores()[0]
    c = (int(low[0]), int(low[1])) if objective == "x-first" else (int(low[1]), int(low[0]))
    starts_array = best.starts.copy()
    starts_array.flags.writeable = False
    return Placement(starts_array, c)


def place(layers: Sequence[LayerSpec], ratios: Sequence[float], objective: Objective = "x-first",
          pinned: np.ndarray | None = None) -> Placement:
    """Window starts for clients of ``ratios`` (one row per client, one column per prunable layer).

    ``pinned[n, p]``: client n keeps the leading units of prunable layer p (start 0, not searched).
    Deterministic and cached: the same layers, ratios and pins give the same placement.
    """
    if objective not in COVERAGE_OBJECTIVES:
        raise ValueError(f"unknown coverage objective '{objective}'; "
                         f"allowed: {', '.join(COVERAGE_OBJECTIVES)}")
    n_prunable = sum(layer.prunable for layer in layers)
    pins = (np.zeros((len(ratios), n_prunable), dtype=bool) if pinned is None
            else np.asarray(pinned, dtype=bool))
    return _place(tuple(layers), tuple(float(r) for r in ratios), objective,
                  tuple(tuple(bool(v) for v in row) for row in pins))
