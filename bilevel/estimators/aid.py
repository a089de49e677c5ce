"""AID with a warm-started linear solve: the RABO/RAFBO hypergradient ("finite-difference", "autograd").

One outer iteration at x:

1. cfg.inner_steps inner steps:  y <- y - inner_lr * grad_y g(x, y)
2. outer gradients:              (grad_x f, grad_y f) at (x, y) on one validation minibatch
3. cfg.v_steps linear steps:     v <- v - v_lr * (H_yy v - grad_y f)      (v -> H_yy^{-1} grad_y f)
4. direction:                    h = grad_x f - H_xy v

v is warm-started from the incoming v (the previous round's solution), so few linear steps suffice
once x moves slowly. The products H_yy v, H_xy v come from a ``ProductOracle``: central differences of
first-order gradients ("finite-difference", no second-order graph) or double backward ("autograd").
Every inner step, linear step and the final H_xy v product draws a fresh training minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.func import grad_and_value

from ..oracles import ProductOracle
from ..types import Params
from .base import BilevelProblem, Sampler, SolverConfig, inner_descent


@dataclass(frozen=True)
class AIDEstimator:
    oracle: ProductOracle

    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        y, inner_loss = inner_descent(problem, cfg, x, y, next_train)
        (grad_x_f, grad_y_f), outer_loss = grad_and_value(problem.f, argnums=(0, 1))(x, y, next_val())
        for _ in range(cfg.v_steps):
            hyy_v, _ = self.oracle(problem.g, x, y, v, next_train(), need_x=False)
            v = {k: v[k] - cfg.v_lr * (hyy_v[k] - grad_y_f[k]) for k in v}
        _, hxy_v = self.oracle(problem.g, x, y, v, next_train(), need_x=True)
        assert hxy_v is not None
        h = {k: grad_x_f[k] - hxy_v[k] for k in grad_x_f}
        return y, v, h, {"inner-loss": inner_loss, "outer-loss": float(outer_loss)}
