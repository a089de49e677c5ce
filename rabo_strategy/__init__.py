"""The resource-adaptive bilevel Strategy (RABO / RAFBO) for Flower's Message API."""

from .strategy import ALGORITHMS, NodeProfile, ResourceAdaptiveBilevel, resolve_profile

__all__ = ["ALGORITHMS", "NodeProfile", "ResourceAdaptiveBilevel", "resolve_profile"]
