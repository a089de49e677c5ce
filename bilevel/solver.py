"""The local bilevel loop shared by RABO and RAFBO.

One local outer iteration on (x, y, v):

1. K inner steps:      y <- y - inner_lr * grad_y g(x, y)
2. outer gradients:    (grad_x f, grad_y f) at (x, y) on one validation minibatch
3. K_v linear steps:   v <- v - v_lr * (H_yy v - grad_y f)   (v -> H_yy^{-1} grad_y f)
4. hypergradient:      h = grad_x f - H_xy v

RABO runs one iteration and returns (y, v, h); the server averages h and steps x.
RAFBO runs T iterations with a local step x <- x - outer_lr * h after each and returns (x, y, v).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.func import grad_and_value

from .oracles import ProductOracle
from .types import LossFn, Params

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


@dataclass(frozen=True)
class BilevelProblem:
    """The inner loss g and the outer loss f, both functions of (x, y, batch)."""

    g: LossFn
    f: LossFn


@dataclass
class LocalResult:
    x: Params
    y: Params
    v: Params
    h: Params | None = None
    """The last hypergradient (what RABO sends)."""
    metrics: dict[str, float] = field(default_factory=dict)


def _axpy(a: float, x: Params, y: Params) -> Params:
    """y + a * x, as new tensors."""
    return {k: y[k] + a * x[k] for k in y}


def outer_iteration(
    problem: BilevelProblem, oracle: ProductOracle, cfg: SolverConfig,
    x: Params, y: Params, v: Params, next_train: Sampler, next_val: Sampler,
) -> tuple[Params, Params, Params, dict[str, float]]:
    """Steps 1-4 above; returns (y, v, h, metrics)."""
    inner_loss = float("nan")
    for _ in range(cfg.inner_steps):
        grad_y, value = grad_and_value(problem.g, argnums=1)(x, y, next_train())
        y = _axpy(-cfg.inner_lr, grad_y, y)
        inner_loss = float(value)
    (grad_x_f, grad_y_f), outer_loss = grad_and_value(problem.f, argnums=(0, 1))(x, y, next_val())
    for _ in range(cfg.v_steps):
        hyy_v, _ = oracle(problem.g, x, y, v, next_train(), need_x=False)
        v = {k: v[k] - cfg.v_lr * (hyy_v[k] - grad_y_f[k]) for k in v}
    _, hxy_v = oracle(problem.g, x, y, v, next_train(), need_x=True)
    assert hxy_v is not None
    h = {k: grad_x_f[k] - hxy_v[k] for k in grad_x_f}
    return y, v, h, {"inner-loss": inner_loss, "outer-loss": float(outer_loss)}


def rabo_local(
    problem: BilevelProblem, oracle: ProductOracle, cfg: SolverConfig,
    x: Params, y: Params, v: Params, next_train: Sampler, next_val: Sampler,
) -> LocalResult:
    """RABO (distributed): one hypergradient at the received x."""
    y, v, h, metrics = outer_iteration(problem, oracle, cfg, x, y, v, next_train, next_val)
    return LocalResult(x=x, y=y, v=v, h=h, metrics=metrics)


def rafbo_local(
    problem: BilevelProblem, oracle: ProductOracle, cfg: SolverConfig,
    x: Params, y: Params, v: Params, next_train: Sampler, next_val: Sampler,
) -> LocalResult:
    """RAFBO (federated): ``outer_steps`` local outer steps on x."""
    h: Params | None = None
    metrics: dict[str, float] = {}
    for _ in range(cfg.outer_steps):
        y, v, h, metrics = outer_iteration(problem, oracle, cfg, x, y, v, next_train, next_val)
        x = _axpy(-cfg.outer_lr, h, x)
    return LocalResult(x=x, y=y, v=v, h=h, metrics=metrics)
