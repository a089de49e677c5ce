"""Product oracles by name: the values of the ``hypergradient`` config key.

=================  =============================================================================
finite-difference  differences of first-order gradients, no second-order graph (finite_difference.py)
autograd           exact products by double backward (autograd.py)
=================  =============================================================================

A new oracle is one module and one row of :data:`REGISTRY`: the ``hypergradient`` key's allowed
values (:data:`Oracle`) and the AID estimators (``bilevel.estimators``) follow from it.

>>> from bilevel.quadratic import Quadratic
>>> q = Quadratic.random()
>>> x, y, v = {"x": q.B.new_ones(6)}, {"y": q.B.new_ones(4)}, {"y": q.B.new_ones(4)}
>>> fd, exact = make_oracle("finite-difference", alpha=1e-3), make_oracle("autograd")
>>> bool((fd(q.g, x, y, v, None)[0]["y"] - exact(q.g, x, y, v, None)[0]["y"]).abs().max() < 1e-9)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from .autograd import AutogradProducts
from .base import ProductOracle, Products
from .finite_difference import SCHEMES, FiniteDifferenceProducts, Scheme

REGISTRY: dict[str, Callable[..., ProductOracle]] = {
    "finite-difference": FiniteDifferenceProducts,
    "autograd": lambda alpha=None, scheme=None: AutogradProducts(),  # exact: the knobs do not apply
}
"""Name -> factory; each takes the finite-difference knobs (``alpha``, ``scheme``) by keyword and
uses those it has."""
ORACLES = tuple(REGISTRY)
Oracle = Literal[ORACLES]  # type: ignore[valid-type]
"""The ``hypergradient`` key's type: one of :data:`ORACLES`."""


def make_oracle(name: str, **knobs: Any) -> ProductOracle:
    """The oracle ``name``; ``knobs`` (``alpha``, ``scheme``) default to the oracle's own."""
    if name not in REGISTRY:
        raise ValueError(f"unknown hypergradient oracle '{name}'; allowed: {', '.join(ORACLES)}")
    return REGISTRY[name](**knobs)


__all__ = ["ORACLES", "REGISTRY", "SCHEMES", "AutogradProducts", "FiniteDifferenceProducts", "Oracle",
           "ProductOracle", "Products", "Scheme", "make_oracle"]
