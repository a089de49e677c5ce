"""Load: a Ray simulation with many registered clients, a few sampled per round.

Starts a private local SuperLink, submits `flwr run`, samples memory while it runs, and prints
peak memory and seconds per round. Not a timed test: run it by hand.

    python -m benchmarks.load                 # 1,000 clients, 50 per round, 5 rounds
    python -m benchmarks.load --quick         # 200 clients, 20 per round, 2 rounds
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.common import benchmark_parser
from benchmarks.flwr_cli import session


def _tree_rss(since: float) -> int:
    """RSS of the processes started since ``since`` (SuperLink, simulation, Ray workers)."""
    total = 0
    for proc in psutil.process_iter(["create_time", "memory_info"]):
        info = proc.info
        if info["create_time"] and info["create_time"] >= since and info["memory_info"]:
            total += info["memory_info"].rss
    return total


def main() -> None:
    parser = benchmark_parser(__doc__, quick="200 clients, 20 per round, 2 rounds", out=False, rounds=5)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.per_round, args.rounds = 200, 20, 2

    with tempfile.TemporaryDirectory() as tmp, session() as flwr:
        results = Path(tmp) / "results"
        start = time.time() - 1
        base_used = psutil.virtual_memory().used
        run_config = (f"num-server-rounds={args.rounds} fraction-train={args.per_round / args.clients} "
                      f"min-train-nodes={args.per_round} profile=false results-dir='{results}'")
        peak_rss = peak_used = 0

        def sample_memory() -> None:
            nonlocal peak_rss, peak_used
            peak_rss = max(peak_rss, _tree_rss(start))
            peak_used = max(peak_used, psutil.virtual_memory().used - base_used)

        entry = flwr.run(run_config, args.clients, poll=sample_memory)
        run_id = entry["run-id"]
        if entry["status"] != "finished:completed":
            sys.exit(f"run {run_id} ended {entry['status']}: {entry.get('status-details')}")
        (run_dir,) = results.iterdir()
        rows = json.loads((run_dir / "metrics.json").read_text())
        elapsed = [row["elapsed-seconds"] for row in rows]
        per_round = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
        print(f"clients {args.clients}, sampled per round {args.per_round}, rounds {args.rounds}")
        print(f"run status {entry['status']}, wall {entry['elapsed']:.1f} s")
        print(f"peak RSS of SuperLink + simulation + Ray processes: {peak_rss / 2**30:.2f} GiB")
        print(f"peak rise of system memory in use: {peak_used / 2**30:.2f} GiB "
              f"(of {psutil.virtual_memory().total / 2**30:.1f} GiB)")
        print("seconds per round: " + ", ".join(f"{s:.1f}" for s in per_round)
              + "  (round 1 includes Ray actor start and profile queries)")
        print(f"replies per round: {[r['replies'] for r in rows[1:]]}, "
              f"failed: {[r['failed-replies'] for r in rows[1:]]}")
        print(f"test accuracy: {rows[0]['test-accuracy']:.3f} -> {rows[-1]['test-accuracy']:.3f}")


if __name__ == "__main__":
    main()
