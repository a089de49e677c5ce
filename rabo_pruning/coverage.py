"""Per-coordinate coverage of a round's kept units: the counts, their upper bounds, the windows.

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
:func:`coverage_of` counts them for any kept-unit sets; :func:`coverage_bounds` gives upper bounds
that hold for any choice of kept units, windows or not. :mod:`rabo_pruning.placement` places the
windows so that (C_x*, C_y*) is high.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from tasks import LayerSpec
from tasks.structure import Block, Structure, as_structure

Objective = Literal["x-first", "y-first"]
COVERAGE_OBJECTIVES: tuple[Objective, ...] = get_args(Objective)


def kept_units(width: int, ratio: float) -> int:
    """Units a layer keeps at ``ratio``: ceil(ratio * width), at least 1."""
    return max(1, math.ceil(ratio * width - 1e-9))


def blocks(network: Structure | Sequence[LayerSpec]) -> tuple[Block, ...]:
    """The coverage blocks of a network (:meth:`tasks.structure.Structure.blocks`)."""
    return as_structure(network).blocks()


def _widths(network: Structure | Sequence[LayerSpec]) -> list[int]:
    return [group.width for group in as_structure(network).groups]


def coverage_bounds(layers: Structure | Sequence[LayerSpec], ratios: Sequence[float]) -> tuple[int, int]:
    """Upper bounds on (C_x*, C_y*) over every choice of kept units (windows or arbitrary sets).

    A coordinate of a layer with pruned outputs and pruned inputs is covered sum_i k_i k'_i times in
    total over its W W' entries, so its minimum is at most floor(sum_i k_i k'_i / (W W')), with
    k_i = ceil(r_i W) (the rounding matters: 20 clients at r = 0.2 on 16 x 32 units give 1, where
    floor(sum r_i^2) = 0). A layer pruned on one side only: floor(sum_i k_i / W). Neither: the number
    of clients. Role x's bound is the smallest over its layers; a role without layers gets the
    number of clients.
    """
    widths = _widths(layers)
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


def coverage_of(layers: Structure | Sequence[LayerSpec], ratios: Sequence[float],
                kept: Sequence[Sequence[np.ndarray]]) -> tuple[int, int]:
    """(C_x*, C_y*) of any kept-unit sets: ``kept[client][p]`` = units of the p-th prunable layer."""
    widths = _widths(layers)
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
