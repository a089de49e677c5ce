"""What the tests share: the built-in strategy built from a run config, the global model of the
test task, and fake ClientApps that answer with chosen profiles and replies."""

from __future__ import annotations

from rabo_protocol import parse_run_config
from rabo_pruning.masks import MaskPolicy
from rabo_strategy import ResourceAdaptiveBilevel
from tasks import LayerSpec

STRATEGY_DEFAULTS = {"outer-momentum": 0.0, "momentum-scope": "all", "max-update-norm": 1e300,
                     "mask-policy": "static"}
"""Where the tests' strategies differ from the run config's defaults: plain averaging of the
replies (no momentum, no norm bound) and the static masks, unless a test says otherwise."""


def built_in_strategy(layers: tuple[LayerSpec, ...], *, mask: MaskPolicy | None = None,
                      **keys: object) -> ResourceAdaptiveBilevel:
    """The built-in strategy for ``layers`` with the run config ``keys`` (``outer_lr=0.5`` is the
    key ``outer-lr``) over :data:`STRATEGY_DEFAULTS`; ``mask`` overrides the mask policy."""
    cfg = parse_run_config({**STRATEGY_DEFAULTS, **{k.replace("_", "-"): v for k, v in keys.items()}})
    return ResourceAdaptiveBilevel(layers, cfg, mask_policy=mask)
