"""Peer baseline: TorchOpt's implicit-differentiation hypergradient on the CNN of :mod:`benchmarks.oracles`.

Measured: for TorchOpt's linear solvers "TorchOpt solve_cg" (``torchopt.linear_solve.solve_cg``) and
"TorchOpt solve_inv (Neumann)" (``torchopt.linear_solve.solve_inv(ns=True)``) and K in ``ks``, the
hypergradient h = grad_x f - H_xy w, with w the solver's approximation of H_yy^{-1} grad_y f, of the
hyper-representation CNN of ``oracles.py`` (x = feature extractor, y = linear head, g = CE + mu ||y||^2 on
the fixed train batch ``case.train``, f = CE on the fixed val batch ``case.val``) at the point (x, y) of
the ``Case``. Each row: "rel-error" = ||h - ref.h|| / ||ref.h|| in float64 (``ref.h``: the exact
hypergradient by conjugate gradient to 1e-12 of ``oracle_setup.exact_hypergradient``); "seconds" = median wall
time of one whole hypergradient in float32 (``settings.reps`` repetitions after ``settings.warmup``
warm-ups, the calls taking turns as in ``common.median_seconds``); "time-vs-grad" = seconds / the median
time of one plain gradient of g in (x, y) on the same batch, measured in the same loop.

How TorchOpt is called (the way its users do implicit differentiation): the inner solution is wrapped
with ``torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=...)``, where
``optimality(y, x) = grad_y g(x, y)`` (``torch.func.grad``; x and y as tuples of tensors). The wrapped
"solver" returns the given y (already the inner solution; the inner solve is not timed), then
``torch.autograd.grad(f(x, y(x)), x)`` gives h: TorchOpt's backward builds the matvec
u -> u^T d(grad_y g)/dy = H_yy u by ``functorch.vjp`` (reverse-over-reverse HVP), solves
H_yy u = -grad_y f with ``solve``, and returns u^T d(grad_y g)/dx = -H_xy w, added by autograd to the
direct grad_x f. Solvers, cold-started (x0 = 0):

* ``solve_cg(maxiter=K, rtol=0.0, atol=0.0)``: exactly K CG iterations (K + 1 H_yy products: TorchOpt
  also evaluates A x0 at x0 = 0). ``rtol=0`` disables TorchOpt's default early stop at
  ||r|| <= 1e-5 ||b||, so K is an iteration count as in ``oracles.py``;
* ``solve_inv(ns=True, maxiter=K, alpha=1 / ref.lipschitz)``: the Neumann series
  alpha * sum_{i=0}^{K} (I - alpha H_yy)^i b, K H_yy products, with the step size ``oracles.py`` uses
  (v-lr = 1 / L). That is K + 1 terms: TorchOpt's K equals ``oracles.py``'s Neumann K + 1.

TorchOpt (0.7.3) is optional: ``pip install torchopt==0.7.3``. Its compiled extension ``torchopt._C``
(fused Adam only) does not load with torch 2.14 (undefined symbol); TorchOpt then falls back to its
pure-Python ops itself, and implicit differentiation and the linear solvers are pure Python anyway.
Without TorchOpt, ``torchopt_rows`` prints a note and returns no rows.

    python -m benchmarks.peers    # widths 0.5 and 1, 5 repetitions: the rows, for checking
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import grad

from benchmarks.common import benchmark_parser, format_table, median_seconds

if TYPE_CHECKING:  # oracle_setup is imported lazily: oracles.py imports this module
    from benchmarks.oracle_setup import Case, Reference, Settings

Params = dict[str, Tensor]
METHODS = ("TorchOpt solve_cg", "TorchOpt solve_inv (Neumann)")


def available() -> str | None:
    """TorchOpt's version, or None when it is not installed."""
    try:
        import torchopt
    except ImportError:
        return None
    return str(torchopt.__version__)


def torchopt_hypergradient(case: Case, solve: Callable[..., Any]) -> Params:
    """h at (case.x, case.y) by ``custom_root`` implicit differentiation with linear solver ``solve``."""
    import torchopt

    g, f, train, val = case.losses.g, case.losses.f, case.train, case.val
    x_keys, y_keys = list(case.x), list(case.y)

    def as_x(t: tuple[Tensor, ...]) -> Params:
        return dict(zip(x_keys, t, strict=True))

    def as_y(t: tuple[Tensor, ...]) -> Params:
        return dict(zip(y_keys, t, strict=True))

    def optimality(y: tuple[Tensor, ...], x: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        grad_y = grad(g, argnums=1)(as_x(x), as_y(y), train)
        return tuple(grad_y[k] for k in y_keys)

    @torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=solve)
    def inner_solution(y: tuple[Tensor, ...], x: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return y  # case.y is already the inner solution

    x = tuple(case.x[k].detach().requires_grad_() for k in x_keys)
    y = inner_solution(tuple(case.y[k].detach() for k in y_keys), x)
    h = torch.autograd.grad(f(as_x(x), as_y(y), val), x)
    return dict(zip(x_keys, h, strict=True))


def solver(method: str, k: int, lipschitz: float) -> Callable[..., Any]:
    """TorchOpt's ``solve(matvec, b)`` for ``method`` with K = ``k`` (see the module docstring)."""
    from torchopt.linear_solve import solve_cg, solve_inv

    if method == "TorchOpt solve_cg":
        return solve_cg(maxiter=k, rtol=0.0, atol=0.0)
    return solve_inv(ns=True, maxiter=k, alpha=1.0 / lipschitz)


def _rel(a: Params, b: Params) -> float:
    diff = torch.cat([(a[k].double() - b[k].double()).reshape(-1) for k in b])
    return float(diff.norm() / torch.cat([t.double().reshape(-1) for t in b.values()]).norm())


def torchopt_rows(case: Case, ref: Reference, settings: Settings,
                  ks: tuple[int, ...] = (5, 20, 100)) -> list[dict[str, Any]]:
    """One row per TorchOpt solver and K: float64 error against ``ref.h``, float32 time (see module doc)."""
    version = available()
    if version is None:
        print("note: torchopt is not installed (pip install torchopt==0.7.3): no TorchOpt peer rows")
        return []
    # TorchOpt 0.7.3 calls functorch.vjp, deprecated in torch >= 2.0 (still works with torch 2.14)
    warnings.filterwarnings("ignore", message=r"[\s\S]*functorch.vjp. is deprecated", category=FutureWarning)
    low = case.to(torch.float32)
    calls: dict[str, Callable[[], object]] = {
        "gradient": lambda: grad(low.losses.g, argnums=(0, 1))(low.x, low.y, low.train)}
    rows = []
    for method in METHODS:
        for k in ks:
            solve = solver(method, k, ref.lipschitz)
            h = torchopt_hypergradient(case, solve)
            calls[f"{method} K={k}"] = lambda solve=solve: torchopt_hypergradient(low, solve)
            rows.append({"problem": "cnn", "width": case.width, "method": method, "K": k,
                         "rel-error": _rel(h, ref.h)})
    seconds = median_seconds(calls, settings.reps, settings.warmup)
    for row in rows:
        row["seconds"] = seconds[f"{row['method']} K={row['K']}"]
        row["time-vs-grad"] = row["seconds"] / seconds["gradient"]
    return rows


def main() -> None:
    from benchmarks.oracle_setup import Settings, exact_hypergradient, fixed_batches, make_case

    benchmark_parser(__doc__, quick=None, out=False).parse_args()
    settings = Settings(widths=(0.5, 1.0), reps=5, warmup=1)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    print(f"torchopt {available()}, torch {torch.__version__}, {settings.threads} thread(s)")
    start = time.perf_counter()
    train, val = fixed_batches(settings)
    rows: list[dict[str, Any]] = []
    for width in settings.widths:
        case = make_case(width, train, val, settings)
        ref = exact_hypergradient(case, settings)
        print(f"width x{width:g}: reference CG {ref.cg_iterations} iterations, "
              f"residual {ref.cg_residual:.2g}, L = {ref.lipschitz:.4g}")
        rows += torchopt_rows(case, ref, settings)
    if rows:
        print(format_table(rows, list(rows[0])))
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
