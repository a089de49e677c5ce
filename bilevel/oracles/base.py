"""The product-oracle interface.

Given the inner loss g, the point (x, y), a direction v (shaped like y) and a minibatch, an oracle
returns the two second-order products the hypergradient needs:

    H_yy v = (d^2 g / dy^2) v      (shaped like y)
    H_xy v = (d^2 g / dx dy) v     (shaped like x; only when ``need_x``)
"""

from __future__ import annotations

from typing import Any, Protocol

from ..types import LossFn, Params


class ProductOracle(Protocol):
    def __call__(
        self, g: LossFn, x: Params, y: Params, v: Params, batch: Any, *, need_x: bool = True
    ) -> tuple[Params, Params | None]:
        """Return (H_yy v, H_xy v); the second item is None when ``need_x`` is false."""
        ...
