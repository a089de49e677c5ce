"""Exact products by double backward (vector-Jacobian product of grad_y g): the reference."""

from __future__ import annotations

from typing import Any

from torch.func import grad, vjp

from ..types import LossFn, Params


class AutogradProducts:
    """(H_yy v, H_xy v) exactly; keeps the graph of grad_y g, so it costs more memory."""

    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        grad_y = grad(g, argnums=1)
        if need_x:
            _, pullback = vjp(lambda x_, y_: grad_y(x_, y_, batch), x, y)
            hxy_v, hyy_v = pullback(v)  # H symmetric: v^T d(grad_y g)/d(x, y)
            return hyy_v, hxy_v
        _, pullback = vjp(lambda y_: grad_y(x, y_, batch), y)
        (hyy_v,) = pullback(v)
        return hyy_v, None
