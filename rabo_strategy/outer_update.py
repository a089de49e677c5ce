"""The outer step: from the round's per-coordinate averages to the new global (x, y, v)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

import numpy as np

from rabo_protocol.presets import DIRECTION_PART, Algorithm, MomentumScope
from rabo_pruning.aggregation import CoverageAverage

__all__ = ["MOMENTUM_SCOPES", "OuterUpdate"]

Parts = dict[str, dict[str, np.ndarray]]
MOMENTUM_SCOPES: tuple[MomentumScope, ...] = get_args(MomentumScope)


def _averaged(acc: CoverageAverage, part: str, previous: Mapping[str, np.ndarray],
              effective: float = 1.0) -> dict[str, np.ndarray]:
    """The per-coordinate average of ``part``, ``effective`` times as far from ``previous``."""
    avg = acc.average({f"{part}:{k}": t for k, t in previous.items()})
    named = {k.split(":", 1)[1]: t for k, t in avg.items()}
    if effective == 1.0:
        return named
    return {k: (previous[k] + effective * (t - previous[k])).astype(t.dtype) for k, t in named.items()}


@dataclass
class OuterUpdate:
    """The new global model: y and v are averaged per coordinate (uncovered ones keep their value);
    x is averaged too (RAFBO), or stepped by the server with heavy ball on the per-coordinate
    average hypergradient, h = 0 where uncovered (RABO). With ``effective`` below 1 (FedNova's
    effective steps, ``rabo_strategy.step_norm``) the averaged parts move that share of the way."""

    algorithm: Algorithm
    outer_lr: float
    momentum: float = 0.0
    scope: MomentumScope = "all"
    """``covered`` or ``all`` (``rabo_protocol.presets.MomentumScope``)."""
    velocity: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in MOMENTUM_SCOPES:
            raise ValueError(f"unknown momentum-scope '{self.scope}'; allowed: {', '.join(MOMENTUM_SCOPES)}")

    def __call__(self, old: Parts, acc: CoverageAverage, effective: float = 1.0) -> Parts:
        new = {part: _averaged(acc, part, old[part], effective) for part in ("y", "v")}
        if DIRECTION_PART[self.algorithm] == "x":
            new["x"] = _averaged(acc, "x", old["x"], effective)
            return {part: new[part] for part in ("x", "y", "v")}
        h = _averaged(acc, "h", {k: np.zeros_like(t) for k, t in old["x"].items()})
        velocity = {k: self.momentum * self.velocity.get(k, 0.0) + h[k] for k in h}
        if self.scope == "covered":  # uncovered coordinates: x and velocity stay put
            covered = {k: acc.weights[f"h:{k}"] > 0 for k in h}
            velocity = {k: np.where(covered[k], velocity[k], self.velocity.get(k, 0.0)) for k in h}
            step = {k: np.where(covered[k], velocity[k], 0.0) for k in h}
        else:
            step = velocity
        self.velocity = velocity
        new["x"] = {k: (t - self.outer_lr * step[k]).astype(t.dtype) for k, t in old["x"].items()}
        return {part: new[part] for part in ("x", "y", "v")}
