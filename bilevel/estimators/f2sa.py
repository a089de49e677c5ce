"""F2SA (Kwon et al., 2023, "A fully first-order method for stochastic bilevel optimization") ("f2sa").

Penalty (value-function) reformulation of min_x F(x) = f(x, y*(x)), y*(x) = argmin_y g(x, y):

    L_lambda(x) = min_w [f(x, w) + lambda g(x, w)] - lambda min_z g(x, z)
    grad L_lambda(x) = grad_x f(x, w_lambda) + lambda (grad_x g(x, w_lambda) - grad_x g(x, y*))
                     = grad F(x) + O(1/lambda)

with w_lambda = argmin_w f(x, w) + lambda g(x, w). Only gradients are used: no Hessian products.
Naming: our ``y`` is F2SA's z (the lower-level solution, the one evaluated at test time) and our ``v``
(shaped like y) is F2SA's y (the penalty variable w). One outer iteration at x, lambda = lambda_k:

1. cfg.inner_steps joint steps, each on one training minibatch b (and one validation minibatch for f):
       y <- y - inner_lr * grad_y g(x, y; b)
       v <- v - inner_lr / (1 + lambda) * (grad_y f(x, v) + lambda grad_y g(x, v; b))
2. direction:  h = grad_x f(x, v) + lambda (grad_x g(x, v) - grad_x g(x, y))

Schedule: lambda_k = min(lambda_max, lambda_0 + growth * k), k = ``step`` (the outer step of the run).

Why joint steps with the same minibatches and the same g-step (our choice; the paper pairs the step
sizes as alpha_k * lambda_k ~ gamma_k): the direction multiplies the gap grad_x g(v) - grad_x g(y) by
lambda, so y and v must descend g in lock-step; then their difference is driven by grad f / lambda
only and lambda times the gap stays bounded as lambda grows. Run separately (y with inner-lr, v with
its own step and batches), the gap is the difference of two optimisation errors and lambda amplifies
it: on the CNN hyper-representation task accuracy fell to chance within 5 rounds once lambda grew.
The y-curvature of f + lambda g is at most (1 + lambda) max(L_f, L_g), so inner_lr / (1 + lambda) is
stable whenever inner_lr is stable for g. ``v-steps`` and ``v-lr`` are not used.

Warm start: v continues from the incoming v; an all-zero v (the server's initial value) means "no
state yet" and v starts from the incoming y, since w_lambda = y* + O(1/lambda).

Step 2 evaluates both grad_x g on one shared training batch (their difference is multiplied by
lambda: a shared batch cancels the common noise) and grad_x f on one validation batch, on which
"outer-loss" f(x, y) is also reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field, model_validator
from torch.func import grad, grad_and_value

from ..split import y_loss
from ..types import Params
from .base import BilevelProblem, Knobs, Sampler, SolverConfig, is_zero

Rate = Annotated[float, Field(gt=0, le=1e6)]


class F2SAKnobs(Knobs):
    f2sa_lambda: Rate = 1.0
    """lambda_0, the first penalty."""
    f2sa_lambda_growth: Annotated[float, Field(ge=0, le=1e6)] = 1.0
    """lambda_k = min(f2sa-lambda-max, f2sa-lambda + f2sa-lambda-growth * k)."""
    f2sa_lambda_max: Rate = 100.0
    """The largest penalty."""

    @model_validator(mode="after")
    def _max_at_least_first(self) -> F2SAKnobs:
        if self.f2sa_lambda_max < self.f2sa_lambda:
            raise ValueError(f"'f2sa-lambda-max' = {self.f2sa_lambda_max} must be at least "
                             f"'f2sa-lambda' = {self.f2sa_lambda}")
        return self


@dataclass(frozen=True)
class F2SAEstimator:
    """The fields are :class:`F2SAKnobs`' values (``f2sa-lambda``, ``f2sa-lambda-growth``,
    ``f2sa-lambda-max``), checked there."""

    lambda0: float
    growth: float
    lambda_max: float

    @classmethod
    def from_knobs(cls, knobs: F2SAKnobs) -> F2SAEstimator:
        return cls(knobs.f2sa_lambda, knobs.f2sa_lambda_growth, knobs.f2sa_lambda_max)

    def own_steps(self, cfg: SolverConfig) -> int:
        return 1  # the direction (v steps jointly with y)

    def penalty(self, step: int) -> float:
        """lambda_k = min(lambda_max, lambda_0 + growth * k)."""
        return float(min(self.lambda_max, self.lambda0 + self.growth * step))

    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        lam = self.penalty(step)
        if is_zero(v):
            v = dict(y)
        lr_v = cfg.inner_lr / (1.0 + lam)
        inner_loss = float("nan")
        for _ in range(cfg.inner_steps):
            g_train = y_loss(problem.g, x, next_train())  # one feature pass for both y and v
            grad_y, value = grad_and_value(g_train)(y)
            grad_f = grad(problem.f, argnums=1)(x, v, next_val())
            grad_g = grad(g_train)(v)
            y = {k: y[k] - cfg.inner_lr * grad_y[k] for k in y}
            v = {k: v[k] - lr_v * (grad_f[k] + lam * grad_g[k]) for k in v}
            inner_loss = float(value)
        train, val = next_train(), next_val()
        grad_x_f = grad(problem.f, argnums=0)(x, v, val)
        grad_x_gv = grad(problem.g, argnums=0)(x, v, train)
        grad_x_gy = grad(problem.g, argnums=0)(x, y, train)
        h = {k: grad_x_f[k] + lam * (grad_x_gv[k] - grad_x_gy[k]) for k in grad_x_f}
        with torch.no_grad():
            outer_loss = float(problem.f(x, y, val))
        return y, v, h, {"inner-loss": inner_loss, "outer-loss": outer_loss, "f2sa-lambda": lam}
