"""Dual pruning, independent of Flower: mask policies choose each client's kept units
(``masks``, ``placement``), ``submodel`` slices the global tensors to a dense submodel and back,
``aggregation`` averages every coordinate over the clients that covered it."""

from .aggregation import CoverageAverage
from .masks import MASK_POLICIES, NESTED_POLICIES, make_mask_policy, submodel_spec
from .submodel import SliceIndex, SubmodelSpec

__all__ = [
    "MASK_POLICIES", "NESTED_POLICIES", "CoverageAverage", "SliceIndex", "SubmodelSpec", "make_mask_policy",
    "submodel_spec",
]
