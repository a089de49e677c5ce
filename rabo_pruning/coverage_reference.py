"""Exact reference for the coverage placement: an integer programme solved with HiGHS (scipy).

Independent of ``rabo_pruning.placement``'s search (they share only
:func:`rabo_pruning.coverage.kept_units`): variables z[n, p, s] = 1 when client n's window in
prunable layer p starts at s; w[n, j, s, s'] >= 0 with marginals
sum_s' w = z[n, out, s] and sum_s w = z[n, in, s'] for a layer whose input and output are both
pruned (w is then the product of the two windows' binaries); integers t_x, t_y <= the coverage of
every coordinate of their role. Lexicographic: maximise the first role's t, fix it, maximise the
other. Client 0's windows are fixed at start 0 (shifting one layer's
windows of every client by the same amount permutes its coordinates and leaves the minima alone).

Used by ``tests/test_placement.py`` and ``benchmarks/placement.py``, never by the app (nothing in
``rabo_pruning`` imports it). scipy comes with scikit-learn, a dependency of the app
(``scipy.optimize.milp`` needs scipy >= 1.9).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from tasks import LayerSpec

from .coverage import kept_units


def optimum(layers: Sequence[LayerSpec], ratios: Sequence[float], objective: str = "x-first"
            ) -> tuple[int, int]:
    """The best (C_x*, C_y*) over window placements, in the order ``objective`` ranks them
    (small cases only: building the programme is cubic in the widths, in Python)."""
    n = len(ratios)
    prunable = [layer for layer in layers if layer.prunable]
    position = {layer.name: p for p, layer in enumerate(prunable)}
    widths = [layer.width for layer in prunable]
    keep = [[kept_units(w, r) for w in widths] for r in ratios]
    if not widths:
        return n, n

    index: dict[tuple, int] = {}

    def var(key: tuple) -> int:
        if key not in index:
            index[key] = len(index)
        return index[key]

    for i in range(n):
        for p, w in enumerate(widths):
            for s in range(w):
                var(("z", i, p, s))
    t = {"x": var(("t", "x")), "y": var(("t", "y"))}
    # coordinate blocks: (role, out position or None, in position or None)
    blocks = []
    for i, layer in enumerate(layers):
        previous = layers[i - 1].name if i > 0 else None
        blocks.append((layer.role, position.get(layer.name), position.get(previous) if previous else None))
    for j, (_, out, inp) in enumerate(blocks):
        if out is not None and inp is not None:
            for i in range(n):
                for s in range(widths[out]):
                    for s2 in range(widths[inp]):
                        var(("w", i, j, s, s2))

    def holds(p: int, i: int, s: int, u: int) -> bool:
        return (u - s) % widths[p] < keep[i][p]

    rows: list[tuple[dict[int, float], float, float]] = []
    for i in range(n):
        for p, w in enumerate(widths):
            rows.append(({var(("z", i, p, s)): 1.0 for s in range(w)}, 1.0, 1.0))
            rows.append(({var(("z", i, p, 0)): 1.0}, 1.0 if i == 0 else 0.0, 1.0))
    for j, (role, out, inp) in enumerate(blocks):
        if out is not None and inp is not None:
            for i in range(n):  # w's marginals are the z's: w is their product (a tight linearisation)
                for s in range(widths[out]):
                    coef = {var(("w", i, j, s, s2)): 1.0 for s2 in range(widths[inp])}
                    rows.append(({**coef, var(("z", i, out, s)): -1.0}, 0.0, 0.0))
                for s2 in range(widths[inp]):
                    coef = {var(("w", i, j, s, s2)): 1.0 for s in range(widths[out])}
                    rows.append(({**coef, var(("z", i, inp, s2)): -1.0}, 0.0, 0.0))
            for u in range(widths[out]):
                for u2 in range(widths[inp]):
                    coef = {t[role]: -1.0}
                    for i in range(n):
                        for s in range(widths[out]):
                            if not holds(out, i, s, u):
                                continue
                            for s2 in range(widths[inp]):
                                if holds(inp, i, s2, u2):
                                    coef[var(("w", i, j, s, s2))] = 1.0
                    rows.append((coef, 0.0, np.inf))
        elif out is not None or inp is not None:
            side = out if out is not None else inp
            for u in range(widths[side]):
                coef = {t[role]: -1.0}
                for i in range(n):
                    for s in range(widths[side]):
                        if holds(side, i, s, u):
                            coef[var(("z", i, side, s))] = 1.0
                rows.append((coef, 0.0, np.inf))

    size = len(index)
    entries = [(r, k, v) for r, (coef, _, _) in enumerate(rows) for k, v in coef.items()]
    r_idx, k_idx, values = zip(*entries, strict=True)
    matrix = coo_matrix((values, (r_idx, k_idx)), shape=(len(rows), size))
    low = np.array([lo for _, lo, _ in rows])
    high = np.array([hi for _, _, hi in rows])
    integrality = np.array([0 if key[0] == "w" else 1 for key in index], dtype=int)
    upper = np.array([n if key[0] == "t" else 1.0 for key in index])
    first, second = ("x", "y") if objective == "x-first" else ("y", "x")
    constraints = [LinearConstraint(matrix.tocsr(), low, high)]
    best = {}
    for role in (first, second):
        c = np.zeros(size)
        c[t[role]] = -1.0
        result = milp(c, constraints=constraints, integrality=integrality, bounds=Bounds(0, upper))
        assert result.success, result.message
        best[role] = int(round(-result.fun))
        fix = np.zeros((1, size))
        fix[0, t[role]] = 1.0
        constraints = [*constraints, LinearConstraint(fix, best[role], np.inf)]
    return best["x"], best["y"]
