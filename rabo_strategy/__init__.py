"""Server-side dual pruning: mask policies, slicing, per-coordinate aggregation, the Strategy."""

from .aggregation import CoverageAverage
from .masks import MASK_POLICIES, make_mask_policy, submodel_spec
from .strategy import ALGORITHMS, NodeProfile, ResourceAdaptiveBilevel, resolve_profile
from .submodel import SliceIndex, SubmodelSpec

__all__ = [
    "ALGORITHMS", "MASK_POLICIES", "CoverageAverage", "NodeProfile", "ResourceAdaptiveBilevel",
    "SliceIndex", "SubmodelSpec", "make_mask_policy", "resolve_profile", "submodel_spec",
]
