"""The names both apps agree on: algorithms, the parts of a reply, and the built-in strategy presets.

One table each: the run config's ``Literal`` types, the strategy's checks and the server's builder
all read them from here, so a new preset is one row.

Built-in strategies all run through ``rabo_strategy.ResourceAdaptiveBilevel`` and differ in who
trains what (``sizing``) and with which local estimator (chosen on the client, from the same
config):

=================  ==========================================  ===========================
strategy           who trains what (sizing)                    local x-direction
=================  ==========================================  ===========================
resource-adaptive  each node its own submodel (dual pruning)   ``hypergradient`` key
full-model         every node the full model, whatever budget  ``hypergradient`` key
drop-weak          only nodes of ratio 1, the full model       ``hypergradient`` key
fednest-aid        every node the full model                   Neumann-series AID
f2sa               every node the full model                   F2SA first-order penalty
=================  ==========================================  ===========================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Algorithm = Literal["rabo", "rafbo"]
"""``rabo``: nodes reply with a hypergradient h, the server steps x; ``rafbo``: nodes take local
outer steps and reply with x, the server averages models."""
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

DIRECTION_PART: dict[Algorithm, str] = {"rabo": "h", "rafbo": "x"}
"""The reply part that carries the outer variable's update: the hypergradient h (shaped like x) or x."""
REPLY_PARTS: dict[Algorithm, tuple[str, ...]] = {a: (DIRECTION_PART[a], "y", "v") for a in ALGORITHMS}
LOCAL_OUTER_STEPS: dict[Algorithm, bool] = {"rabo": False, "rafbo": True}
"""Whether nodes step x themselves (``outer-steps`` local steps) or leave it to the server (one)."""

Capacity = Literal["fixed", "dynamic", "deadline"]
"""``fixed``: a node's ratio never changes; ``dynamic``: nodes whose ratio comes from
``ratio-levels`` draw a level each round; ``deadline``: each node picks the largest level whose
predicted local round meets ``round-deadline`` (``client_app/timing.py``)."""
MomentumScope = Literal["covered", "all"]
"""Which x coordinates RABO's heavy-ball step moves: those some client covered this round (their
velocity is updated, the others' velocity is kept for later), or all (uncovered ones keep moving
with their old velocity)."""

Sizing = Literal["resource-adaptive", "full-model", "drop-weak"]
"""How a node's budget becomes the size it trains: its own ratio, always the full model, or the
full model for the nodes whose budget admits it and nothing for the others."""


@dataclass(frozen=True)
class Preset:
    sizing: Sizing
    estimator: str | None = None
    """The local estimator (``bilevel.ESTIMATORS``); None: the run's ``hypergradient`` key."""


PRESETS: dict[str, Preset] = {
    "resource-adaptive": Preset("resource-adaptive"),
    "full-model": Preset("full-model"),
    "drop-weak": Preset("drop-weak"),
    "fednest-aid": Preset("full-model", estimator="neumann"),
    "f2sa": Preset("full-model", estimator="f2sa"),
}
STRATEGIES = tuple(PRESETS)
"""Built-in strategies; any other value must be a plug-in import path 'package.module:ClassName'."""
