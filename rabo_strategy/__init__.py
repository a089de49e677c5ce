"""The resource-adaptive bilevel Strategy, split by job: which nodes train (``sampling``), what each
node is and trains at (``profiles``), what it is sent (``messages``), which replies count
(``replies``) and what they make of the global model (``aggregate``). The pruning itself (masks,
slicing, per-coordinate averaging) is ``rabo_pruning``'s."""

from .profiles import NodeProfile, RoundSizer, query_profiles, resolve_profile
from .sampling import NodeSampling
from .strategy import ResourceAdaptiveBilevel

__all__ = ["NodeProfile", "NodeSampling", "ResourceAdaptiveBilevel", "RoundSizer", "query_profiles",
           "resolve_profile"]
