"""AID with a warm-started linear solve: the RABO/RAFBO hypergradient ("finite-difference", "autograd").

One outer iteration at x:

1. cfg.inner_steps inner steps:  y <- y - inner_lr * grad_y g(x, y)
2. outer gradients:              (grad_x f, grad_y f) at (x, y) on one validation minibatch
3. cfg.v_steps solver steps:     v -> H_yy^{-1} grad_y f, warm-started from the incoming v
                                 (``gd``: v <- v - v_lr (H_yy v - grad_y f); ``cg``: conjugate gradient)
4. direction:                    h = grad_x f - H_xy v

v is warm-started from the incoming v (the previous round's solution), so few linear steps suffice
once x moves slowly (``v_warm_start = False`` starts from v = 0 instead). The products H_yy v, H_xy
v come from a ``ProductOracle``: differences of first-order gradients ("finite-difference", no
second-order graph) or double backward ("autograd").

Minibatches (``batch``): every inner step draws a fresh training minibatch. With ``fixed`` (the
default), steps 3 and 4 share one more training minibatch: its features (for a task with a feature
split), its base gradient (forward differences) or its graph (autograd) are computed once, and the
linear system has one fixed matrix, which conjugate gradient needs. With ``fresh`` every linear step
and the H_xy v product draw their own minibatch (gd only): more samples, at one network pass per
product.

Damping (``damping`` d > 0) solves (H_yy + d I) v = grad_y f instead: a linear system that stays
well conditioned where H_yy is nearly singular (a small mu, a saturated head), at a bias of order
d / lambda_min(H_yy) in v; 0 (the default) is the plain solve.

On the closed-form quadratic (``bilevel.quadratic``), at y = y*(x), conjugate gradient's
dim(y) = 4 steps solve for v exactly and h is the true hypergradient; with damping, v solves the
damped system:

>>> from bilevel import BilevelProblem, make_estimator
>>> from bilevel.quadratic import Quadratic
>>> q = Quadratic.random()
>>> x, no_batch, cfg = {"x": q.B.new_ones(6)}, lambda: None, SolverConfig(inner_steps=0, v_steps=4)
>>> problem, y = BilevelProblem(q.g, q.f), {"y": q.y_star(x["x"])}
>>> _, v, h, _ = make_estimator("autograd", v_solver="cg")(problem, cfg, x, y, {"y": q.B.new_zeros(4)},
...                                                        no_batch, no_batch, step=0)
>>> torch.allclose(h["x"], q.hypergradient(x["x"]))
True
>>> damped = make_estimator("autograd", v_solver="cg", v_damping=0.5)
>>> _, v, _, _ = damped(problem, cfg, x, y, {"y": q.B.new_zeros(4)}, no_batch, no_batch, step=0)
>>> torch.allclose(v["y"], torch.linalg.solve(q.A + 0.5 * torch.eye(4, dtype=q.A.dtype), y["y"] - q.c))
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch.func import grad_and_value

from ..linear_solve import Solver, solve
from ..oracles import FiniteDifferenceProducts, ProductOracle, Scheme, make_oracle
from ..types import Params
from .base import BilevelProblem, Knobs, Sampler, SolverConfig, inner_descent

VBatch = Literal["fixed", "fresh"]


class AIDKnobs(Knobs):
    fd_alpha: Annotated[float, Field(gt=0, le=1)] = FiniteDifferenceProducts.alpha
    """finite-difference: length of the perturbation of the difference."""
    fd_scheme: Scheme = FiniteDifferenceProducts.scheme
    """finite-difference: "central" or "forward" differences for H_yy v (bilevel.oracles)."""
    v_solver: Solver = "gd"
    """The linear solve for v, "gd" or "cg" (bilevel.linear_solve)."""
    v_batch: VBatch = "fixed"
    """"fixed" (the v-solve and H_xy v on one training minibatch) or "fresh" (a new minibatch for
    every product; gd only)."""
    v_warm_start: bool = True
    """Start the linear solve from the received v (true) or from v = 0 every round (false: a cold
    start, as FedNest's Neumann series; it shows what the warm start is worth)."""
    v_damping: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    """Damping d of the linear solve: v -> (H_yy + d I)^{-1} grad_y f (0: none)."""

    @model_validator(mode="after")
    def _cg_needs_one_matrix(self) -> AIDKnobs:
        if self.v_solver == "cg" and self.v_batch != "fixed":
            raise ValueError("'v-solver' = 'cg' needs 'v-batch' = 'fixed' (conjugate gradient needs "
                             "one matrix H_yy, so all its products must use one minibatch)")
        return self


@dataclass(frozen=True)
class AIDEstimator:
    """The fields are :class:`AIDKnobs`' values, checked there (build it with :meth:`from_knobs` or
    ``bilevel.make_estimator``)."""

    oracle: ProductOracle
    solver: Solver
    batch: VBatch
    warm_start: bool
    damping: float

    @classmethod
    def from_knobs(cls, oracle: str, knobs: AIDKnobs) -> AIDEstimator:
        """AID with the ``oracle`` products (a name of ``bilevel.oracles.ORACLES``)."""
        return cls(make_oracle(oracle, alpha=knobs.fd_alpha, scheme=knobs.fd_scheme), knobs.v_solver,
                   knobs.v_batch, knobs.v_warm_start, knobs.v_damping)

    def _damped(self, hyy: Callable[[Params], Params]) -> Callable[[Params], Params]:
        """p -> (H_yy + damping I) p (``hyy`` itself without damping)."""
        if self.damping == 0.0:
            return hyy
        return lambda p: {k: t + self.damping * p[k] for k, t in hyy(p).items()}

    def own_steps(self, cfg: SolverConfig) -> int:
        return cfg.v_steps + 1  # the linear solve, then the direction

    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        y, inner_loss = inner_descent(problem, cfg, x, y, next_train)
        (grad_x_f, grad_y_f), outer_loss = grad_and_value(problem.f, argnums=(0, 1))(x, y, next_val())
        if not self.warm_start:
            v = {k: torch.zeros_like(t) for k, t in v.items()}
        if self.batch == "fixed":
            products = self.oracle.at(problem.g, x, y, next_train(), need_x=True)
            v = solve(self.solver, self._damped(products.hyy), grad_y_f, v, steps=cfg.v_steps, lr=cfg.v_lr)
        else:  # every product on its own minibatch, then H_xy v on one more

            def fresh_hyy(p: Params) -> Params:
                return self.oracle.at(problem.g, x, y, next_train(), need_x=False).hyy(p)

            v = solve(self.solver, self._damped(fresh_hyy), grad_y_f, v, steps=cfg.v_steps, lr=cfg.v_lr)
            products = self.oracle.at(problem.g, x, y, next_train(), need_x=True)
        hxy_v = products.hxy(v)
        h = {k: grad_x_f[k] - hxy_v[k] for k in grad_x_f}
        return y, v, h, {"inner-loss": inner_loss, "outer-loss": float(outer_loss)}
