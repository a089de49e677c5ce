"""Product oracles, selected by the ``hypergradient`` config key."""

from __future__ import annotations

from typing import Literal, get_args

from .autograd import AutogradProducts
from .base import ProductOracle, Products
from .finite_difference import SCHEMES, FiniteDifferenceProducts, Scheme

Oracle = Literal["finite-difference", "autograd"]
ORACLES: tuple[Oracle, ...] = get_args(Oracle)


def make_oracle(name: str, fd_alpha: float = 1e-2, fd_scheme: Scheme = "central") -> ProductOracle:
    if name == "finite-difference":
        return FiniteDifferenceProducts(alpha=fd_alpha, scheme=fd_scheme)
    if name == "autograd":
        return AutogradProducts()
    raise ValueError(f"unknown hypergradient oracle '{name}'; allowed: {', '.join(ORACLES)}")


__all__ = ["ORACLES", "SCHEMES", "AutogradProducts", "FiniteDifferenceProducts", "Oracle", "ProductOracle",
           "Products", "Scheme", "make_oracle"]
