"""Second-order-free products: central differences of first-order gradients.

    H v ~ [grad g(x, y + d v) - grad g(x, y - d v)] / (2 d),   d = alpha / ||v||

Both sides use the same minibatch; (x, y) are never modified (the perturbed points are new
tensors), and no graph is kept between the two gradient calls, so memory is that of plain SGD.
One pair of gradient calls gives H_yy v and H_xy v together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad

from ..types import LossFn, Params


@dataclass(frozen=True)
class FiniteDifferenceProducts:
    """``alpha``: norm of the perturbation d * v (the step of the central difference)."""

    alpha: float = 1e-2

    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        norm = torch.sqrt(sum(torch.sum(t * t) for t in v.values()))
        if float(norm) == 0.0:  # H 0 = 0 exactly
            zeros_x = {k: torch.zeros_like(t) for k, t in x.items()} if need_x else None
            return {k: torch.zeros_like(t) for k, t in v.items()}, zeros_x
        d = self.alpha / norm
        y_plus = {k: y[k] + d * v[k] for k in y}
        y_minus = {k: y[k] - d * v[k] for k in y}
        if need_x:
            gx_p, gy_p = grad(g, argnums=(0, 1))(x, y_plus, batch)
            gx_m, gy_m = grad(g, argnums=(0, 1))(x, y_minus, batch)
            hxy_v = {k: (gx_p[k] - gx_m[k]) / (2 * d) for k in gx_p}
        else:
            gy_p = grad(g, argnums=1)(x, y_plus, batch)
            gy_m = grad(g, argnums=1)(x, y_minus, batch)
            hxy_v = None
        return {k: (gy_p[k] - gy_m[k]) / (2 * d) for k in gy_p}, hxy_v
