"""The estimator interface: one outer iteration's work at a fixed outer variable x.

An estimator maps (x, y, v) to (y, v, h, metrics): it refines the lower-level variable y, updates its
auxiliary variable v (shaped like y; what v means is the method's own) and returns the direction h
(shaped like x) that x moves along: x <- x - outer_lr * h, on the server (RABO) or locally (RAFBO).

This module also holds what every estimator shares: the problem, the solver's step counts and step
sizes, and the inner descent on y.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.func import grad_and_value

from ..split import y_loss
from ..types import LossFn, Params

Sampler = Callable[[], Any]
"""Returns the next minibatch."""


@dataclass(frozen=True)
class SolverConfig:
    inner_steps: int = 5
    v_steps: int = 5
    outer_steps: int = 1
    inner_lr: float = 0.1
    v_lr: float = 0.1
    outer_lr: float = 0.1
    step_guard: str = "none"
    """"curvature": cap inner_lr and v_lr at 1 / lambda_max(H_yy) each outer step (bilevel.step_guard)."""
    guard_steps: int = 3
    """Power iterations of the curvature estimate."""
    proximal_mu: float = 0.0
    """FedProx: each local outer step also pulls x toward the x the round started from,
    x <- x - outer_lr * (h + proximal_mu * (x - x_0)). RAFBO only (RABO takes no local x step)."""


@dataclass(frozen=True)
class BilevelProblem:
    """The inner loss g and the outer loss f, both functions of (x, y, batch)."""

    g: LossFn
    f: LossFn


@dataclass(frozen=True)
class EstimatorConfig:
    """Which estimator, and its own knobs (each estimator reads only its own)."""

    name: str
    """One of ``ESTIMATORS``."""
    fd_alpha: float = 1e-2
    """finite-difference: length of the perturbation of the difference."""
    fd_scheme: str = "central"
    """finite-difference: "central" or "forward" differences for H_yy v (bilevel.oracles)."""
    v_solver: str = "gd"
    """finite-difference, autograd: the linear solve for v, "gd" or "cg" (bilevel.linear_solve)."""
    v_batch: str = "fixed"
    """finite-difference, autograd: "fixed" (the v-solve and H_xy v on one training minibatch) or
    "fresh" (a new minibatch for every product; gd only)."""
    neumann_steps: int = 5
    """neumann: number K of terms of the truncated series."""
    f2sa_lambda: float = 1.0
    """f2sa: lambda_0."""
    f2sa_lambda_growth: float = 1.0
    """f2sa: lambda_k = min(f2sa_lambda_max, f2sa_lambda + f2sa_lambda_growth * k)."""
    f2sa_lambda_max: float = 100.0


class Estimator(Protocol):
    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        """One outer iteration's work at x: returns (y, v, h, metrics); h is the x-direction (shaped like x).

        ``step`` = index of this outer step in the whole run (0, 1, 2, ...), for schedules.
        ``metrics`` has at least "inner-loss" and "outer-loss".
        """
        ...


def axpy(a: float, x: Params, y: Params) -> Params:
    """y + a * x, as new tensors."""
    return {k: y[k] + a * x[k] for k in y}


def inner_descent(
    problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, next_train: Sampler
) -> tuple[Params, float]:
    """``cfg.inner_steps`` steps y <- y - inner_lr * grad_y g(x, y), a fresh training minibatch each.

    Returns the new y and the inner loss of the last step (at its starting point; nan for no step).
    When g is a :class:`~bilevel.split.SplitLoss`, each step computes the features of its minibatch
    once, without a graph, and differentiates the head alone.
    """
    inner_loss = float("nan")
    for _ in range(cfg.inner_steps):
        grad_y, value = grad_and_value(y_loss(problem.g, x, next_train()))(y)
        y = axpy(-cfg.inner_lr, grad_y, y)
        inner_loss = float(value)
    return y, inner_loss


def is_zero(p: Params) -> bool:
    """Whether every entry of every tensor is zero."""
    return not any(bool(torch.any(t != 0)) for t in p.values())
