"""No outer learning ("none"): the lower level alone, the baseline for every bilevel method.

One outer iteration at x: cfg.inner_steps steps y <- y - inner_lr * grad_y g(x, y); h = 0 (so x never
moves); v is returned unchanged. E.g. training on noisy labels without cleaning them.
"outer-loss" is f(x, y) at the final y on one validation minibatch (no gradient taken).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..types import Params
from .base import BilevelProblem, Sampler, SolverConfig, inner_descent


@dataclass(frozen=True)
class InnerOnlyEstimator:
    def own_steps(self, cfg: SolverConfig) -> int:
        return 0

    def __call__(
        self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
        next_train: Sampler, next_val: Sampler, *, step: int,
    ) -> tuple[Params, Params, Params, dict[str, float]]:
        y, inner_loss = inner_descent(problem, cfg, x, y, next_train)
        with torch.no_grad():
            outer_loss = float(problem.f(x, y, next_val()))
        h = {k: torch.zeros_like(t) for k, t in x.items()}
        return y, v, h, {"inner-loss": inner_loss, "outer-loss": outer_loss}
