"""Step-size safety: the inner and v step sizes capped by the measured curvature of g in y.

Gradient descent on an L-smooth function diverges once its step exceeds 2 / L, and the linear solve
for v (``v <- v - v_lr (H_yy v - b)``) likewise. L = lambda_max(H_yy) is not one number per task:
under label skew a client's features are alike, so its head problem is much more curved than an IID
client's, and one ``inner-lr`` cannot suit every client (docs/results.md, "Dual pruning under
heterogeneity": at inner-lr 0.3 the CNN's clients' own inner loss rises above its starting value in
the first round of a Dirichlet(0.3) run, and every method ends near chance).

``guarded`` measures L at the current (x, y) on one training minibatch with finite-difference
products (first-order only: no second-order graph, plain-SGD memory): ``guard_steps`` = s power
iterations from u_0 = grad_y g give the Rayleigh quotient L_hat = u^T H u / u^T u at u = H^(s-1) u_0
(:func:`largest_curvature`). It returns the config with

    inner_lr <- min(inner_lr, 1 / L_hat),   v_lr <- min(v_lr, 1 / L_hat).

**What the cap guarantees.** A Rayleigh quotient of H_yy never exceeds lambda_max, and for a
positive semi-definite H_yy (g convex in y, as the bilevel methods assume) it does not decrease with
s from a fixed start (both up to the products' finite-difference error; exact on a quadratic g).
So the capped step 1 / L_hat is at least 1 / lambda_max, *half* the stability limit 2 / lambda_max:
the guard never cuts a step below half the limit. It is *not* guaranteed to stay below the limit:
that needs L_hat > lambda_max / 2, which a few iterations give when u_0 has enough weight on the
top eigenvectors, but a start with little weight there underestimates lambda_max by any factor (the
capped step is then that factor times 1 / lambda_max). With the default s = 3 the capped steps
measured between half the limit and the limit on the built-in tasks (docs/results.md, section 6a,
has the range); ``tests/test_claims.py`` checks the lower bound, and that a poor start passes the
limit, on quadratics with a known lambda_max. Where the configured steps are already below
1 / L_hat nothing changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

import torch

from .estimators.base import BilevelProblem, Sampler, SolverConfig
from .oracles import FiniteDifferenceProducts
from .oracles.finite_difference import norm_of
from .types import Params

StepGuard = Literal["curvature", "none"]
STEP_GUARDS: tuple[StepGuard, ...] = get_args(StepGuard)


def _dot(a: Params, b: Params) -> float:
    return float(sum(torch.sum(a[k].double() * b[k].double()) for k in a))


def largest_curvature(problem: BilevelProblem, x: Params, y: Params, batch: object, steps: int,
                      alpha: float = FiniteDifferenceProducts.alpha) -> float:
    """A lower estimate of lambda_max(H_yy g) at (x, y) on ``batch``: the Rayleigh quotient of
    H^(steps-1) grad_y g: at most lambda_max and, for g convex in y, nondecreasing in ``steps`` (up
    to the products' finite-difference error); 0.0 when g is flat there."""
    products = FiniteDifferenceProducts(alpha=alpha).at(problem.g, x, y, batch, need_x=False)
    v = products.gradient()  # the features of ``batch`` are computed once, for this and every product
    curvature = 0.0
    for _ in range(steps):
        norm = norm_of(v)
        if norm == 0.0:
            return 0.0
        v = {k: t / norm for k, t in v.items()}
        hv = products.hyy(v)
        curvature = _dot(v, hv)
        v = hv
    return max(curvature, 0.0)


def guarded(cfg: SolverConfig, problem: BilevelProblem, x: Params, y: Params,
            next_train: Sampler) -> tuple[SolverConfig, dict[str, float]]:
    """``cfg`` with inner_lr and v_lr capped at 1 / L_hat (``cfg.step_guard == "curvature"``; a
    capped step is at least half the stability limit 2 / lambda_max, see the module docstring), and
    the metrics "curvature" (L_hat) and "inner-lr-used"; ``cfg`` unchanged for ``"none"``."""
    if cfg.step_guard not in STEP_GUARDS:
        raise ValueError(f"unknown step-guard '{cfg.step_guard}'; allowed: {', '.join(STEP_GUARDS)}")
    if cfg.step_guard == "none":
        return cfg, {}
    curvature = largest_curvature(problem, x, y, next_train(), cfg.guard_steps)
    if curvature > 0.0:
        cfg = replace(cfg, inner_lr=min(cfg.inner_lr, 1.0 / curvature), v_lr=min(cfg.v_lr, 1.0 / curvature))
    return cfg, {"curvature": curvature, "inner-lr-used": cfg.inner_lr}
