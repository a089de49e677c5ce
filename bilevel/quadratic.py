"""A closed-form bilevel problem (quadratic g and f): the reference for checking estimators.

    g(x, y) = 1/2 y^T A y - y^T B x            A symmetric positive definite
    f(x, y) = 1/2 ||y - c||^2 + 1/2 x^T D x
    y*(x)   = A^{-1} B x
    grad F  = D x + B^T A^{-1} (y*(x) - c)

With y*(x) and the hypergradient known exactly, a new estimator can be checked against them
(``tests/test_estimators.py``, ``tests/test_oracles.py``, ``tests/test_products.py``) and its error
measured (``benchmarks/oracles.py``). ``x = {"x": ...}`` and ``y = {"y": ...}`` are the parameter
dicts of :class:`bilevel.BilevelProblem`; ``BilevelProblem(q.g, q.f)`` is the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .types import Params

__all__ = ["Params", "Quadratic"]


@dataclass
class Quadratic:
    A: Tensor
    B: Tensor
    c: Tensor
    D: Tensor

    @classmethod
    def random(cls, dim_x: int = 6, dim_y: int = 4, seed: int = 0) -> Quadratic:
        gen = torch.Generator().manual_seed(seed)
        m = torch.randn(dim_y, dim_y, generator=gen, dtype=torch.float64)
        a = m @ m.T / dim_y + torch.eye(dim_y, dtype=torch.float64)  # eigenvalues in [1, ~5]
        b = torch.randn(dim_y, dim_x, generator=gen, dtype=torch.float64)
        c = torch.randn(dim_y, generator=gen, dtype=torch.float64)
        d = torch.eye(dim_x, dtype=torch.float64) * 0.5
        return cls(a / a.norm(2) * 2.0, b, c, d)

    def g(self, x: Params, y: Params, batch: object = None) -> Tensor:
        return 0.5 * y["y"] @ self.A @ y["y"] - y["y"] @ self.B @ x["x"]

    def f(self, x: Params, y: Params, batch: object = None) -> Tensor:
        diff = y["y"] - self.c
        return 0.5 * diff @ diff + 0.5 * x["x"] @ self.D @ x["x"]

    def y_star(self, x: Tensor) -> Tensor:
        return torch.linalg.solve(self.A, self.B @ x)

    def hypergradient(self, x: Tensor) -> Tensor:
        return self.D @ x + self.B.T @ torch.linalg.solve(self.A, self.y_star(x) - self.c)
