"""The product-oracle interface.

Given the inner loss g, the point (x, y) and a minibatch, an oracle returns the two second-order
products the hypergradient needs, for any direction v (shaped like y):

    H_yy v = (d^2 g / dy^2) v      (shaped like y)
    H_xy v = (d^2 g / dx dy) v     (shaped like x)

``at(g, x, y, batch)`` binds the point and the batch once and returns :class:`Products`, so what the
products share is computed once: the features of a :class:`~bilevel.split.SplitLoss`, the base
gradient of a forward difference, the graph of an exact product. A linear solve on one minibatch
calls ``hyy`` many times on one ``Products``. ``oracle(g, x, y, v, batch)`` is the one-off form.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..types import LossFn, Params


class Products(Protocol):
    """The products of g at one point (x, y) on one minibatch."""

    def hyy(self, v: Params) -> Params:
        """H_yy v."""
        ...

    def hxy(self, v: Params) -> Params:
        """H_xy v (only when the products were bound with ``need_x``)."""
        ...


class ProductOracle(Protocol):
    def at(self, g: LossFn, x: Params, y: Params, batch: Any, *, need_x: bool = True) -> Products:
        """Bind (x, y, batch); ``need_x`` prepares the x-side (the pullback of the features)."""
        ...

    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        """Return (H_yy v, H_xy v); the second item is None when ``need_x`` is false."""
        ...


def one_off(
    oracle: ProductOracle, g: LossFn, x: Params, y: Params, v: Params, batch: Any, need_x: bool
) -> tuple[Params, Params | None]:
    """``oracle(g, x, y, v, batch)`` through ``oracle.at``: what every oracle's ``__call__`` does."""
    products = oracle.at(g, x, y, batch, need_x=need_x)
    return products.hyy(v), (products.hxy(v) if need_x else None)
