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
from pydantic import BaseModel, ConfigDict
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
    """"curvature": cap inner_lr and v_lr at 1 / L_hat each outer step, L_hat <= lambda_max(H_yy) an
    estimate (bilevel.step_guard: a capped step is at least half the stability limit)."""
    guard_steps: int = 3
    """Power iterations of the curvature estimate."""
    outer_trust_region: float = 0.0
    """RAFBO: each local outer step is at most this times ||x_0|| long, x_0 the received x (0: off)."""
    proximal_mu: float = 0.0
    """FedProx: each local outer step also pulls x toward the x the round started from,
    x <- x - outer_lr * (h + proximal_mu * (x - x_0)). RAFBO only (RABO takes no local x step)."""


@dataclass(frozen=True)
class BilevelProblem:
    """The inner loss g and the outer loss f, both functions of (x, y, batch)."""

    g: LossFn
    f: LossFn


class Knobs(BaseModel):
    """An estimator's own settings, one field per run-config key (``fd_alpha`` is ``fd-alpha``).

    Each estimator module declares its knobs as a subclass, with type, range, default and a
    docstring; the run config inherits every estimator's fields (``bilevel.EstimatorKnobs``), so a
    new knob is declared once, here, and validated with the rest of the run config.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


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

    def own_steps(self, cfg: SolverConfig) -> int:
        """The local steps of one outer iteration besides ``cfg.inner_steps`` (linear-solve steps,
        series terms, the x-direction): what a client's ``flops-per-step`` divides by."""
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
