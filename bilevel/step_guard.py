"""Step-size safety: the inner and v step sizes capped by the measured curvature of g in y.

Gradient descent on an L-smooth function diverges once its step exceeds 2 / L, and the linear solve
for v (``v <- v - v_lr (H_yy v - b)``) likewise. L = lambda_max(H_yy) is not one number per task:
under label skew a client's features are alike, so its head problem is much more curved than an IID
client's, and one ``inner-lr`` cannot suit every client (docs/results.md, "Dual pruning under
heterogeneity": at inner-lr 0.3 the CNN's clients' own inner loss rises above its starting value in
the first round of a Dirichlet(0.3) run, and every method ends near chance).

``guarded`` measures L at the current (x, y) on one training minibatch by a few power iterations
with finite-difference products (first-order only: no second-order graph, plain-SGD memory),
started from grad_y g, and returns the config with

    inner_lr <- min(inner_lr, 1 / L),   v_lr <- min(v_lr, 1 / L),

half the stability limit. Where the configured steps are already safe nothing changes.
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
                      alpha: float = 1e-2) -> float:
    """An estimate of lambda_max(H_yy g) at (x, y) on ``batch``: the Rayleigh quotient after
    ``steps`` power iterations from grad_y g (0.0 when g is flat there)."""
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
    """``cfg`` with inner_lr and v_lr capped at 1 / L (``cfg.step_guard == "curvature"``), and the
    metrics "curvature" and "inner-lr-used"; ``cfg`` unchanged for ``"none"``."""
    if cfg.step_guard not in STEP_GUARDS:
        raise ValueError(f"unknown step-guard '{cfg.step_guard}'; allowed: {', '.join(STEP_GUARDS)}")
    if cfg.step_guard == "none":
        return cfg, {}
    curvature = largest_curvature(problem, x, y, next_train(), cfg.guard_steps)
    if curvature > 0.0:
        cfg = replace(cfg, inner_lr=min(cfg.inner_lr, 1.0 / curvature), v_lr=min(cfg.v_lr, 1.0 / curvature))
    return cfg, {"curvature": curvature, "inner-lr-used": cfg.inner_lr}
