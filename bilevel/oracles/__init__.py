"""Product oracles, selected by the ``hypergradient`` config key."""

from __future__ import annotations

from .autograd import AutogradProducts
from .base import ProductOracle
from .finite_difference import FiniteDifferenceProducts

ORACLES = ("finite-difference", "autograd")


def make_oracle(name: str, fd_alpha: float = 1e-2) -> ProductOracle:
    if name == "finite-difference":
        return FiniteDifferenceProducts(alpha=fd_alpha)
    if name == "autograd":
        return AutogradProducts()
    raise ValueError(f"unknown hypergradient oracle '{name}'; allowed: {', '.join(ORACLES)}")


__all__ = ["ORACLES", "AutogradProducts", "FiniteDifferenceProducts", "ProductOracle", "make_oracle"]
