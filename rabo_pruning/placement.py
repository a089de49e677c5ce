"""Where each client's window sits in each prunable layer, so that the round's coverage is high.

A *placement* gives every client, in every prunable layer, a cyclic window of
``kept_units(width, ratio)`` consecutive units (the start is the only choice); C_x* and C_y*, the
minimum number of clients covering a coordinate of role x and y, are defined and counted in
:mod:`rabo_pruning.coverage`.

:func:`place` maximises (C_x*, C_y*) lexicographically (``objective='x-first'``) or (C_y*, C_x*)
(``'y-first'``), then fewer coordinates at each minimum; a final pass keeps (C_x*, C_y*) and
raises the minimum coverage of the layers' output units, so that no channel is left untrained
where the budgets allow. It is a heuristic:
a greedy construction (largest client first, each window where it raises the objective most)
followed by best-response local search (:mod:`rabo_pruning.search`: move one window at a time
while the objective strictly improves) from that start, from the wrap-around placement and from
``RESTARTS`` seeded random ones, stopping early at the bounds (then it is optimal).
``tests/test_placement.py`` checks it against an exact integer programme
(:mod:`rabo_pruning.coverage_reference`) on random mixes of up to 6 clients and widths up to 8
(300 of 300 optimal in ``benchmarks/placement.py``), which also measures it on the real widths:
both bounds reached in 26 of 34 cases, one client below a bound in one role in the others (the
optimum there is unknown).
:func:`coverage_bounds` gives upper bounds that hold for any choice of kept units, windows or not;
it, :func:`coverage_of`, :func:`kept_units` and :func:`window` are re-exported here from
:mod:`rabo_pruning.coverage`.

**Per-sample parameters.** The placement sees the prunable groups only, so its C_x* is over the x
*layers*. A task's per-sample parameters (``sample_params``: hyper-cleaning's sample weights) are
sliced by owner, not by ratio (each client gets the coordinates of its own samples), and never enter
it. On hyper-cleaning the only prunable group is the fixed feature layer fc1 (x, never trained),
read by the head (y): the placement's C_x* (fc1's unit coverage) equals its C_y* (the head's input
coverage) and both objectives place the same windows, so the choice serves the head, not fc1.
The round's reported ``coverage-x-min`` counts every x coordinate, per-sample weights included
(each has one owner): on such a task it is 1 when every owner replied and 0 when one sat out.
``tests/test_claims.py`` checks both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from tasks import LayerSpec
from tasks.structure import Block, Structure, as_structure

from .coverage import COVERAGE_OBJECTIVES, Objective, coverage_bounds, coverage_of, kept_units, window
from .search import WindowSearch

__all__ = [
    "COVERAGE_OBJECTIVES", "RESTARTS", "Objective", "Placement", "coverage_bounds", "coverage_of",
    "kept_units", "place", "window",
]


Choose = Callable[[WindowSearch, int, int, int], int]
"""(search, client, prunable layer, the unit after that layer's previous window) -> a start."""


def _construct(search: WindowSearch, choose: Choose) -> None:
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


def _greedy(search: WindowSearch) -> None:
    """Each window where the partial placement scores best; ties go to the unit after the
    previously placed window of that layer (wrap-around)."""
    _construct(search, lambda s, n, p, cursor: s.best_start(n, p, cursor)[0])


def _wrap_around(search: WindowSearch) -> None:
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


def _random_start(search: WindowSearch, rng: np.random.Generator) -> None:
    _construct(search, lambda s, n, p, cursor: int(rng.integers(s.widths[p])))


@lru_cache(maxsize=256)
def _place(layers: Structure, ratios: tuple[float, ...], objective: Objective,
           pinned: tuple[tuple[bool, ...], ...]) -> Placement:
    bounds = coverage_bounds(layers, ratios)
    target = bounds if objective == "x-first" else (bounds[1], bounds[0])
    pins = np.array(pinned, dtype=bool).reshape(len(ratios), -1)
    rng = np.random.default_rng([len(ratios), *(round(r * 1e6) for r in ratios)])
    starts = [_greedy, _wrap_around] + [lambda s: _random_start(s, rng)] * RESTARTS
    best: WindowSearch | None = None
    for construct in starts:
        search = WindowSearch(layers, ratios, objective, pins)
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


SEARCH_ELEMENTS = 2**20
"""A best-response move scores every start of a window against a block's pair counts at once
(starts x out units x in units); a network whose largest such product exceeds this is placed on
its groups coarsened to :data:`COARSE_WIDTH` units each (one coarse unit = W / 32 consecutive
units), then the starts are scaled back. Layer chains of the built-in tasks stay exact (at most
64 x 32 x 64); a ResNet-18 block (512 x 512 x 512) would need 1 GB per move."""
COARSE_WIDTH = 32


class _Coarse:
    """A structure's groups at most :data:`COARSE_WIDTH` wide (its blocks unchanged), to place on."""

    def __init__(self, structure: Structure) -> None:
        self.groups = tuple(replace(g, width=min(g.width, COARSE_WIDTH)) for g in structure.groups)
        self.classifier, self._blocks = structure.classifier, structure.blocks()

    def full_widths(self) -> dict[str, int]:
        return {g.name: g.width for g in self.groups}

    def blocks(self) -> tuple[Block, ...]:
        return self._blocks

    def dims(self, kept: object, shapes: object) -> dict[str, tuple[np.ndarray | None, ...]]:
        raise TypeError("a coarsened structure is only placed on, never sliced")

    def unit_energy(self, group: int, params: object) -> np.ndarray:
        raise TypeError("a coarsened structure is only placed on, never sliced")


@lru_cache(maxsize=16)
def _search_structure(structure: Structure) -> Structure:
    widths = [g.width for g in structure.groups]
    size = max((widths[b.out] * widths[b.inp] * max(widths[b.out], widths[b.inp])
                for b in structure.blocks() if b.out is not None and b.inp is not None), default=0)
    return structure if size <= SEARCH_ELEMENTS else _Coarse(structure)


def place(layers: Structure | Sequence[LayerSpec], ratios: Sequence[float], objective: Objective = "x-first",
          pinned: np.ndarray | None = None) -> Placement:
    """Window starts for clients of ``ratios`` (one row per client, one column per prunable layer).

    ``pinned[n, p]``: client n keeps the leading units of prunable layer p (start 0, not searched).
    Deterministic and cached: the same layers, ratios and pins give the same placement.
    """
    if objective not in COVERAGE_OBJECTIVES:
        raise ValueError(f"unknown coverage objective '{objective}'; "
                         f"allowed: {', '.join(COVERAGE_OBJECTIVES)}")
    structure = as_structure(layers)
    search = _search_structure(structure)
    pins = (np.zeros((len(ratios), len(structure.groups)), dtype=bool) if pinned is None
            else np.asarray(pinned, dtype=bool))
    placement = _place(search, tuple(float(r) for r in ratios), objective,
                       tuple(tuple(bool(v) for v in row) for row in pins))
    if search is structure:
        return placement
    full = np.array([g.width for g in structure.groups])
    coarse = np.array([g.width for g in search.groups])
    starts = placement.starts * full // coarse
    starts.flags.writeable = False
    return Placement(starts, placement.coverage)
