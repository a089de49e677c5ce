"""From the round's per-coordinate averages to the new global (x, y, v) and the round's metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
from flwr.app import MetricRecord

from rabo_protocol.presets import DIRECTION_PART, Algorithm, MomentumScope
from rabo_pruning.aggregation import CoverageAverage

from .screen import MIN_PEERS

Parts = dict[str, dict[str, np.ndarray]]
MOMENTUM_SCOPES: tuple[MomentumScope, ...] = get_args(MomentumScope)


def _averaged(acc: CoverageAverage, part: str, previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    avg = acc.average({f"{part}:{k}": t for k, t in previous.items()})
    return {k.split(":", 1)[1]: t for k, t in avg.items()}


@dataclass
class OuterUpdate:
    """The new global model: y and v are averaged per coordinate (uncovered ones keep their value);
    x is averaged too (RAFBO), or stepped by the server with heavy ball on the per-coordinate
    average hypergradient, h = 0 where uncovered (RABO)."""

    algorithm: Algorithm
    outer_lr: float
    momentum: float = 0.0
    scope: MomentumScope = "all"
    """``covered`` or ``all`` (``rabo_protocol.presets.MomentumScope``)."""
    velocity: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in MOMENTUM_SCOPES:
            raise ValueError(f"unknown momentum-scope '{self.scope}'; allowed: {', '.join(MOMENTUM_SCOPES)}")

    def __call__(self, old: Parts, acc: CoverageAverage) -> Parts:
        new = {part: _averaged(acc, part, old[part]) for part in ("y", "v")}
        if DIRECTION_PART[self.algorithm] == "x":
            new["x"] = _averaged(acc, "x", old["x"])
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


def round_metrics(acc: CoverageAverage, x_keys: Sequence[str], y_keys: Sequence[str],
                  accepted: Sequence[MetricRecord], failed: int, unscreened: int = 0,
                  untrained: int = 0) -> MetricRecord:
    """Coverage of x and y (min, mean, fraction covered; ``x_keys`` are the reply part that updates
    x; ``-trained-min`` counts only the clients that changed a coordinate), reply counts, the
    screen's figures (``unscreened`` replies, ``untrained`` rows, and the fraction of the covered
    coordinates fewer than ``MIN_PEERS`` + 1 replies trained), and the
    clients' own numeric metrics averaged by their num-examples."""
    total = sum(float(m["num-examples"]) for m in accepted)  # type: ignore[arg-type]
    out: dict[str, float | int] = {
        "coverage-x-min": acc.min_coverage(x_keys),
        "coverage-y-min": acc.min_coverage(y_keys),
        "coverage-x-mean": acc.mean_coverage(x_keys),
        "coverage-y-mean": acc.mean_coverage(y_keys),
        "coverage-x-fraction": acc.covered_fraction(x_keys),
        "coverage-y-fraction": acc.covered_fraction(y_keys),
        "coverage-x-trained-min": acc.min_trained(x_keys),
        "coverage-y-trained-min": acc.min_trained(y_keys),
        "replies": len(accepted),
        "failed-replies": failed,
        "tolerated-byzantine-min": acc.tolerated([*x_keys, *y_keys]),
        "unscreened-replies": unscreened,
        "untrained-rows": untrained,
        "unprotected-fraction": acc.covered_fraction_below(MIN_PEERS + 1),
        "num-examples": int(total),
    }
    server_keys = set(out)
    for metrics in accepted:
        weight = float(metrics["num-examples"]) / total  # type: ignore[arg-type]
        for key, value in metrics.items():
            if (key in server_keys or key in ("partition-id",) or isinstance(value, bool)
                    or not isinstance(value, (int, float)) or not math.isfinite(value)):
                continue  # the server's own figures and identity keys are never a client's to set
            out[key] = out.get(key, 0.0) + weight * float(value)
    return MetricRecord(out)
