"""Losses that declare a feature split: g(x, y, b) = head(x, y, features(x, b), b).

When x is a prefix of the network and y the rest (hyper-representation: x the feature extractor,
y the classifier head), the features z = phi(x; b) do not depend on y. Every y-only computation on
a minibatch (inner steps, H_yy v products) can then compute z once, without a graph, and work on
the head alone; every x-gradient through the features is one vector-Jacobian product of phi, and a
difference of x-gradients at two y's (a finite-difference H_xy v) is one such product of the
difference, because the pullback is linear. This is what makes a hypergradient cost a few gradient
steps instead of one network pass per product.

A task opts in by handing a :class:`SplitLoss` as its inner loss; plain callables keep the generic
path (every call is a full forward and backward of g), and :func:`y_loss` / :class:`XGradients`
treat both alike. x may also enter the head directly (hyper-cleaning's per-sample weights):
``head`` receives the whole x, and its direct x-gradient is added to the one through the features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vjp

from .types import LossFn, Params

Features = Callable[[Params, Any], Tensor]
"""z = phi(x; batch): depends on x and the batch only."""
Head = Callable[[Params, Params, Tensor, Any], Tensor]
"""A scalar loss of (x, y, z, batch)."""


@dataclass(frozen=True)
class SplitLoss:
    """A loss of (x, y, batch) that is ``head(x, y, features(x, batch), batch)``.

    Callable like any ``LossFn``; the oracles and the inner descent recognise it and reuse z.
    """

    features: Features
    head: Head

    def __call__(self, x: Params, y: Params, batch: Any) -> Tensor:
        return self.head(x, y, self.features(x, batch), batch)


def y_loss(g: LossFn, x: Params, batch: Any) -> Callable[[Params], Tensor]:
    """g(x, ., batch) as a function of y alone: for a :class:`SplitLoss` the features are computed
    here, once and without a graph; otherwise every call runs the whole loss."""
    if isinstance(g, SplitLoss):
        with torch.no_grad():
            z = g.features(x, batch)
        return lambda y: g.head(x, y, z, batch)
    return lambda y: g(x, y, batch)


class XGradients:
    """grad_x g(x, y', batch) at fixed (x, batch) for several y', and linear combinations of them.

    For a :class:`SplitLoss` the features' forward pass and its pullback are built once (at
    construction); each x-gradient is then the head's gradient in (x, z) and one pullback. For a
    plain loss each x-gradient is a full backward pass.
    """

    def __init__(self, g: LossFn, x: Params, batch: Any) -> None:
        self._g, self._x, self._batch = g, x, batch
        if isinstance(g, SplitLoss):
            z, self._pullback = vjp(lambda x_: g.features(x_, batch), x)
            self.z: Tensor | None = z.detach()
        else:
            self.z = None

    def of(self, y_dir: Callable[[Params, Tensor | None], Tensor]) -> Params:
        """The x-gradient of the scalar ``y_dir(x, z)`` (z: the features, None without a split),
        where ``y_dir`` is g at some y, a difference of g at two y's, or any function of the head
        that depends on x through the features and directly."""
        if isinstance(self._g, SplitLoss):
            assert self.z is not None
            direct, dz = grad(y_dir, argnums=(0, 1))(self._x, self.z)
            (through,) = self._pullback(dz)
            return {k: direct[k] + through[k] for k in direct}
        return grad(lambda x_: y_dir(x_, None))(self._x)

    def y_loss(self) -> Callable[[Params], Tensor]:
        """g(x, ., batch) as a function of y alone, on the features computed here (like
        :func:`y_loss`, without a second forward pass of the features)."""
        return lambda y: self.loss(self._x, y, self.z)

    def loss(self, x: Params, y: Params, z: Tensor | None) -> Tensor:
        """g at (x, y) with the features z (recomputed when there is no split): for ``of``."""
        if isinstance(self._g, SplitLoss):
            assert z is not None
            return self._g.head(x, y, z, self._batch)
        return self._g(x, y, self._batch)
