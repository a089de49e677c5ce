"""Second-order-free products: differences of first-order gradients along the unit direction u = v/||v||.

    central:  H v ~ ||v|| [grad g(x, y + a u) - grad g(x, y - a u)] / (2 a)       error O(a^2)
    forward:  H_yy v ~ ||v|| [grad_y g(x, y + a u) - grad_y g(x, y)] / a           error O(a)

a = ``alpha`` is the length of the perturbation. The forward scheme computes grad_y g(x, y) once per
``at`` and then needs one gradient per product instead of two, which pays when products are full
network passes (no feature split) and many share a minibatch (a linear solve). H_xy v is always the
central difference: it is taken once per hypergradient, and with either scheme it costs one backward
pass of the difference (two forward passes of the head).

The norm is taken after scaling by the largest entry, so v with entries of 1e20 or 1e-25 neither
overflows nor underflows in float32; the product is rescaled by ||v|| at the end. (x, y) are never
modified (the perturbed points are new tensors) and no graph is kept between the gradient calls
except the features' pullback of a :class:`~bilevel.split.SplitLoss` (what one plain gradient step
holds), so memory stays that of plain SGD. With a split, H_yy v lives on the head alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.func import grad

from ..split import XGradients, y_loss
from ..types import LossFn, Params
from .base import one_off

Scheme = Literal["central", "forward"]
SCHEMES: tuple[Scheme, ...] = ("central", "forward")


def direction(v: Params) -> tuple[float, Params]:
    """(||v||, v / ||v||), computed without overflow or underflow; (0, v) when v = 0.

    Raises ValueError when v has a NaN or infinite entry (a product along it is undefined).
    """
    # float64 accumulation covers float32's whole range (1e20^2 and 1e-25^2 are fine in float64);
    # a float64 v beyond it (entries near 1e154) is rescaled by its largest entry first
    parts = [torch.linalg.vector_norm(t, dtype=torch.float64) for t in v.values() if t.numel()]
    norm = float(torch.linalg.vector_norm(torch.stack(parts))) if parts else 0.0
    if math.isinf(norm):
        scale = max(float(t.abs().max()) for t in v.values() if t.numel())
        if math.isfinite(scale):
            norm = scale * float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(t / scale) for t in v.values() if t.numel()])))
    if not math.isfinite(norm):
        raise ValueError("finite-difference product along a direction v with NaN or infinite entries")
    if norm == 0.0:
        return 0.0, v
    return norm, {k: t / norm for k, t in v.items()}


def _zeros(like: Params) -> Params:
    return {k: torch.zeros_like(t) for k, t in like.items()}


def _shift(y: Params, a: float, u: Params) -> Params:
    return {k: y[k] + a * u[k] for k in y}


class _DifferencesAt:
    def __init__(self, oracle: FiniteDifferenceProducts, g: LossFn, x: Params, y: Params, batch: Any,
                 need_x: bool) -> None:
        self._alpha, self._scheme = oracle.alpha, oracle.scheme
        self._x_params, self._y = x, y
        loss = y_loss(g, x, batch)
        self._grad_y = grad(loss)
        # both gradients of a central difference in one call: d/d(y+, y-) [g(y+) - g(y-)]
        self._grad_pair = grad(lambda plus, minus: loss(plus) - loss(minus), argnums=(0, 1))
        self._base: Params | None = None
        self._x = XGradients(g, x, batch) if need_x else None

    def hyy(self, v: Params) -> Params:
        norm, u = direction(v)
        if norm == 0.0:  # H 0 = 0 exactly
            return _zeros(v)
        a = self._alpha
        if self._scheme == "forward":
            if self._base is None:
                self._base = self._grad_y(self._y)
            plus = self._grad_y(_shift(self._y, a, u))
            return {k: (plus[k] - self._base[k]) * (norm / a) for k in plus}
        plus, minus_neg = self._grad_pair(_shift(self._y, a, u), _shift(self._y, -a, u))
        return {k: (plus[k] + minus_neg[k]) * (norm / (2 * a)) for k in plus}

    def hxy(self, v: Params) -> Params:
        if self._x is None:
            raise ValueError("H_xy v needs products bound with need_x=True")
        norm, u = direction(v)
        if norm == 0.0:
            return _zeros(self._x_params)
        a, xg = self._alpha, self._x
        plus, minus = _shift(self._y, a, u), _shift(self._y, -a, u)
        diff = xg.of(lambda x_, z: xg.loss(x_, plus, z) - xg.loss(x_, minus, z))
        return {k: t * (norm / (2 * a)) for k, t in diff.items()}


@dataclass(frozen=True)
class FiniteDifferenceProducts:
    """``alpha``: length of the perturbation a u; ``scheme``: central or forward differences for H_yy v."""

    alpha: float = 1e-2
    scheme: Scheme = "central"

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"fd-alpha must be > 0, got {self.alpha}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown fd-scheme '{self.scheme}'; allowed: {', '.join(SCHEMES)}")

    def at(self, g: LossFn, x: Params, y: Params, batch: Any, *, need_x: bool = True) -> _DifferencesAt:
        return _DifferencesAt(self, g, x, y, batch, need_x)

    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        return one_off(self, g, x, y, v, batch, need_x)
