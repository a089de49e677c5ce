"""The resource-adaptive bilevel Strategy, split by job: which nodes train (``node_sampling``), what
each node is and trains at (``profiles``, asked for by ``queries``), what it is sent (``messages``),
which replies count (``intake``, ``replies``, ``lazy``, ``screen``) and what they make of the global model
(``outer_update``, ``round_metrics``). What the server needs from any strategy is named in
``contract``. The pruning itself (masks, slicing, per-coordinate averaging) is ``rabo_pruning``'s."""

from .contract import ServerFacing, Stateful
from .node_sampling import NodeSampling
from .profiles import NodeProfile, RoundSizer, resolve_profile
from .queries import query_profiles
from .strategy import ResourceAdaptiveBilevel

__all__ = ["NodeProfile", "NodeSampling", "ResourceAdaptiveBilevel", "RoundSizer", "ServerFacing", "Stateful",
           "query_profiles", "resolve_profile"]
