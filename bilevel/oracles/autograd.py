"""Exact products by double backward: the reference ("autograd").

H_yy v is the vector-Jacobian product of grad_y g; its graph is built once per ``at`` and pulled back
for every v (the linear solve on one minibatch pays one forward and backward, then one double
backward per product). H_xy v = grad_x <grad_y g(x, y), v>, through the features' pullback when g is
a :class:`~bilevel.split.SplitLoss`. With a split, the products live on the head alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vjp

from ..split import XGradients, y_loss
from ..types import LossFn, Params
from .base import one_off


def _dot(a: Params, b: Params) -> Tensor:
    return sum((torch.sum(a[k] * b[k]) for k in a), torch.zeros((), dtype=next(iter(a.values())).dtype))


class _ExactAt:
    def __init__(self, g: LossFn, x: Params, y: Params, batch: Any, need_x: bool) -> None:
        self._y = y
        self._x = XGradients(g, x, batch) if need_x else None
        # with need_x the features were just computed for the pullback: reuse them
        loss = y_loss(g, x, batch) if self._x is None else self._x.y_loss()
        self._grad_y: Callable[[Params], Params] = grad(loss)
        self._pullback: Callable[[Params], tuple[Params]] | None = None

    def hyy(self, v: Params) -> Params:
        if self._pullback is None:
            _, self._pullback = vjp(self._grad_y, self._y)
        (hyy_v,) = self._pullback(v)  # H symmetric: v^T d(grad_y g)/dy
        return hyy_v

    def hxy(self, v: Params) -> Params:
        if self._x is None:
            raise ValueError("H_xy v needs products bound with need_x=True")
        xg = self._x
        return xg.of(lambda x_, z: _dot(grad(lambda y_: xg.loss(x_, y_, z))(self._y), v))


class AutogradProducts:
    """(H_yy v, H_xy v) exactly; keeps the graph of grad_y g while the products are bound."""

    def at(self, g: LossFn, x: Params, y: Params, batch: Any, *, need_x: bool = True) -> _ExactAt:
        return _ExactAt(g, x, y, batch, need_x)

    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        return one_off(self, g, x, y, v, batch, need_x)
