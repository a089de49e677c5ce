"""The coverage placement on the real layer widths: (C_x*, C_y*) against the bounds and two
simple placements; on small cases against the exact optimum.

For each budget mix and objective: the placement's coverage and time, the upper bounds of
``coverage_bounds`` (any kept units), static masks (leading units) and wrap-around windows (each
layer on its own, every window starting where the previous client's ended). A placement at the
bound is optimal; below it the gap to the optimum is at most the gap to the bound (the exact
integer programme of rabo_pruning/coverage_reference.py does not finish on these widths: 16 clients on
the CNN ran 20 minutes without a proof). The small-case sweep repeats the property test's check
(exact optimum, up to 6 clients, widths 2-8) on more mixes.

    python -m benchmarks.placement            # about 2 min
    python -m benchmarks.placement --quick    # fewer mixes (about 30 s)
"""

from __future__ import annotations

import random
import time

import numpy as np

from benchmarks.common import benchmark_parser, write_table
from rabo_pruning.coverage_reference import optimum
from rabo_pruning.placement import coverage_bounds, coverage_of, kept_units, place, window
from tasks import HyperRepresentation, HyperRepresentationMLP, LayerSpec

CNN = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)
MLP = HyperRepresentationMLP(in_shape=(1, 28, 28), num_classes=10)
LEVELS = (1.0, 0.75, 0.5, 0.3, 0.25, 0.125)


def _simple(layers: tuple[LayerSpec, ...], ratios: list[float], wrap: bool) -> tuple[int, int]:
    widths = [layer.width for layer in layers if layer.prunable]
    cursor = [0] * len(widths)
    kept = []
    for r in ratios:
        row = []
        for p, w in enumerate(widths):
            k = kept_units(w, r)
            row.append(window(w, k, cursor[p]))
            if wrap:
                cursor[p] = (cursor[p] + k) % w
        kept.append(row)
    return coverage_of(layers, ratios, kept)


def _mixes(quick: bool) -> list[tuple[str, tuple[LayerSpec, ...], list[float]]]:
    rng = random.Random(0)
    mixes = [
        ("cnn default (10)", CNN.layers, [1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5]),
        ("cnn 1/2, 1/4 (8)", CNN.layers, [0.5] * 4 + [0.25] * 4),
        ("cnn 0.3 to 0.75 mix (8)", CNN.layers, [0.3, 0.75, 0.3, 0.75, 0.5, 0.6, 0.3, 0.6]),
        ("cnn 16 x 0.3", CNN.layers, [0.3] * 16),
        ("cnn 20 x 0.2", CNN.layers, [0.2] * 20),
    ]
    for i in range(3 if quick else 8):
        no_full = [rng.choice(LEVELS[1:]) for _ in range(10)]
        mixes.append((f"cnn random no-full {i} (10)", CNN.layers, no_full))
    for i in range(1 if quick else 3):
        mixes.append((f"cnn random {i} (30)", CNN.layers, [rng.choice(LEVELS) for _ in range(30)]))
    mixes.append(("mlp random (100)", MLP.layers, [rng.choice(LEVELS) for _ in range(100)]))
    return [(name, layers, sorted(r, reverse=True)) for name, layers, r in mixes]


def _small_cases(count: int) -> tuple[int, int]:
    rng = random.Random(1)
    hits = 0
    for _ in range(count):
        widths = [rng.randint(2, 8) for _ in range(rng.randint(1, 3))]
        hidden = (LayerSpec(f"l{i}", rng.choice("xy"), w, prunable=True) for i, w in enumerate(widths))
        layers = (*hidden, LayerSpec("head", "y", 3, prunable=False))
        ratios = sorted((rng.choice(LEVELS) for _ in range(rng.randint(1, 6))), reverse=True)
        objective = rng.choice(("x-first", "y-first"))
        hits += place(layers, ratios, objective).coverage == optimum(layers, ratios, objective)
    return hits, count


def main() -> None:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args()
    table = []
    for name, layers, ratios in _mixes(args.quick):
        bounds = coverage_bounds(layers, ratios)
        for objective in ("x-first", "y-first"):
            start = time.perf_counter()
            placement = place(layers, ratios, objective)
            seconds = time.perf_counter() - start
            row = {
                "mix": name, "clients": len(ratios), "objective": objective,
                "placement": "{}/{}".format(*placement.coverage), "bound": "{}/{}".format(*bounds),
                "static": "{}/{}".format(*_simple(layers, ratios, wrap=False)),
                "wrap-around": "{}/{}".format(*_simple(layers, ratios, wrap=True)),
                "at-bound": placement.coverage == bounds, "seconds": round(seconds, 2),
            }
            table.append(row)
            print(row, flush=True)
    hits, count = _small_cases(60 if args.quick else 300)
    print(f"small cases (up to 6 clients, widths 2-8): the placement is optimal in {hits} of {count}")
    name = "placement" + ("-quick" if args.quick else "")
    at_bound = sum(row["at-bound"] for row in table)
    print(f"real widths: {at_bound} of {len(table)} (mix, objective) pairs reach both bounds")
    write_table(args.out, name, table, {"small-cases": f"{hits} of {count} optimal",
                                        "coverage": "C_x*/C_y*"})


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
