"""FedNest-style AID (Tarzanagh et al., 2022): a truncated Neumann series for H_yy^{-1} grad_y f ("neumann").

One outer iteration at x:

1. cfg.inner_steps inner steps:  y <- y - inner_lr * grad_y g(x, y)
2. outer gradients:              (grad_x f, grad_y f) at (x, y) on one validation minibatch
3. Neumann series:               v = eta * sum_{k=0}^{K-1} (I - eta H_yy)^k grad_y f,   eta = cfg.v_lr
4. direction:                    h = grad_x f - H_xy v

Step 3 runs the term p_0 = eta grad_y f, p_{k+1} = p_k - eta H_yy p_k and sums v = p_0 + ... + p_{K-1}:
K - 1 exact Hessian-vector products by double backward (second order, as FedNest), each on a fresh
training minibatch, then one H_xy v product on another. The truncation error is
v - H_yy^{-1} grad_y f = -(I - eta H_yy)^K H_yy^{-1} grad_y f, which shrinks monotonically in K when
0 < eta <= 1/L (L the largest eigenvalue of H_yy) and converges for eta < 2/L.

Cold start: the incoming v is ignored and the new v is returned (FedNest recomputes it each round).
With a deterministic Hessian this equals K warm-start linear steps of the "autograd" estimator started
from v = 0. FedNest's stochastic variant also draws K at random; here K is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field
from torch.func import grad_and_value

from ..oracles import AutogradProducts
from ..types import Params
from .base import BilevelProblem, Knobs, Sampler, SolverConfig, inner_descent

_EXACT = AutogradProducts()


class NeumannKnobs(Knobs):
    neumann_steps: Annotated[int, Field(ge=1, le=100_000)] = 5
    """Number K of terms of the truncated series."""


@dataclass(frozen=True)
class NeumannEstimator:
    steps: int
    """K, the number of terms of the series (``neumann-steps``: :class:`NeumannKnobs` checks it)."""

    @classmethod
    def from_knobs(cls, knobs: NeumannKnobs) -> NeumannEstimator:
        return cls(steps=knobs.neumann_steps)

    def own_steps(self, cfg: SolverConfig) -> int:
        return self.steps  # K - 1 series products, then the direction

    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        eta = cfg.v_lr
        y, inner_loss = inner_descent(problem, cfg, x, y, next_train)
        (grad_x_f, grad_y_f), outer_loss = grad_and_value(problem.f, argnums=(0, 1))(x, y, next_val())
        term = {k: eta * t for k, t in grad_y_f.items()}
        v = dict(term)
        for _ in range(self.steps - 1):
            hyy_p, _ = _EXACT(problem.g, x, y, term, next_train(), need_x=False)
            term = {k: term[k] - eta * hyy_p[k] for k in term}
            v = {k: v[k] + term[k] for k in v}
        _, hxy_v = _EXACT(problem.g, x, y, v, next_train(), need_x=True)
        assert hxy_v is not None
        h = {k: grad_x_f[k] - hxy_v[k] for k in grad_x_f}
        return y, v, h, {"inner-loss": inner_loss, "outer-loss": float(outer_loss)}
