"""Why one inner step size cannot serve every client: the curvature of g in y, per client ratio.

The CNN task, 10 clients at ratios 1, 1/2, 1/4, 1/8, under IID and Dirichlet(0.3) data, 3 rounds of
resource-adaptive RABO with ``step-guard=curvature`` (which measures lambda_max(H_yy g) on every
client at every outer step and reports it as the client metric ``curvature``), and the same runs
with the guard off. Prints the mean and range of the curvature per ratio, the step 2 / L beyond
which gradient descent on y diverges, and the largest inner loss (at the last inner step) any client
of that ratio reported, with and without the guard (a client's loss starts near ln 10 = 2.30).

    python -m benchmarks.curvature        # 4 runs of 3 rounds (about 1 minute)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import benchmark_parser, run_inprocess, write_table
from benchmarks.vocab import splits

SCENARIOS = splits("iid", "dirichlet-0.3")


def main() -> None:
    args = benchmark_parser(__doc__, quick=None).parse_args()
    start = time.perf_counter()
    base = {"num-server-rounds": 3, "profile": False}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, data in SCENARIOS.items():
            guarded = run_inprocess({**base, **data, "step-guard": "curvature"}, 10, Path(tmp))
            plain = run_inprocess({**base, **data, "step-guard": "none"}, 10, Path(tmp))
            by_ratio: dict[float, list[float]] = defaultdict(list)
            for row in guarded.clients:
                by_ratio[float(row["resource-ratio"])].append(float(row["curvature"]))

            def inner_losses(run: object, ratio: float) -> list[float]:
                return [float(r["inner-loss"]) for r in run.clients  # type: ignore[attr-defined]
                        if float(r["resource-ratio"]) == ratio]

            for ratio, values in sorted(by_ratio.items(), reverse=True):
                table.append({
                    "scenario": scenario, "ratio": ratio, "curvature-mean": statistics.mean(values),
                    "curvature-min": min(values), "curvature-max": max(values),
                    "divergence-step-2/L-max": 2.0 / max(values),
                    "inner-loss-max-guarded": max(inner_losses(guarded, ratio)),
                    "inner-loss-max-unguarded": max(inner_losses(plain, ratio)),
                    "final-accuracy-guarded": guarded.rows[-1]["test-accuracy"],
                    "final-accuracy-unguarded": plain.rows[-1]["test-accuracy"],
                })
    write_table(args.out, "curvature", table,
                {**base, "scenarios": SCENARIOS, "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
