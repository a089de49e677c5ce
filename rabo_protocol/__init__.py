"""What the ServerApp and the ClientApp share, below both: the validated run and node config
(``config``, ``node``, ``defaults``), the names they agree on (``presets``), the message format
including the node profile (``wire``) and the choice of device (``device``). Neither app imports
the other; both import this."""

from .config import RunConfig, parse_run_config
from .node import NodeConfig, parse_node_config
from .parsing import ConfigError
from .presets import ALGORITHMS, PRESETS, STRATEGIES

__all__ = ["ALGORITHMS", "PRESETS", "STRATEGIES", "ConfigError", "NodeConfig", "RunConfig",
           "parse_node_config", "parse_run_config"]
