"""Mask policies: which output units of a prunable layer a client keeps in a round.

- ``static``  (HeteroFL): the leading units, always the same.
- ``rolling`` (FedRolex): a window that shifts by one unit per round (wrapping around).
- ``random``  (Federated Dropout): a uniform subset, seeded by (seed, round, client, layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tasks import LayerSpec

from .submodel import SubmodelSpec

MASK_POLICIES = ("static", "rolling", "random")


class MaskPolicy(Protocol):
    def __call__(
        self, layer_index: int, width: int, keep: int, server_round: int, client_key: int
    ) -> np.ndarray:
        """Sorted indices of the ``keep`` kept units out of ``width``."""
        ...


def static_policy(layer_index: int, width: int, keep: int, server_round: int,
                  client_key: int) -> np.ndarray:
    return np.arange(keep)


def rolling_policy(layer_index: int, width: int, keep: int, server_round: int,
                   client_key: int) -> np.ndarray:
    start = (server_round - 1) % width
    return np.sort((start + np.arange(keep)) % width)


@dataclass(frozen=True)
class RandomPolicy:
    seed: int

    def __call__(self, layer_index: int, width: int, keep: int, server_round: int,
                 client_key: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, server_round, client_key, layer_index])
        return np.sort(rng.choice(width, size=keep, replace=False))


def make_mask_policy(name: str, seed: int) -> MaskPolicy:
    if name == "static":
        return static_policy
    if name == "rolling":
        return rolling_policy
    if name == "random":
        return RandomPolicy(seed)
    raise ValueError(f"unknown mask-policy '{name}'; allowed: {', '.join(MASK_POLICIES)}")


def kept_units(width: int, ratio: float) -> int:
    """Units a layer keeps at ``ratio``: ceil(ratio * width), at least 1."""
    return max(1, math.ceil(ratio * width - 1e-9))


def submodel_spec(layers: tuple[LayerSpec, ...], ratio: float, policy: MaskPolicy,
                  server_round: int, client_key: int) -> SubmodelSpec:
    kept = {
        layer.name: policy(i, layer.width, kept_units(layer.width, ratio), server_round, client_key)
        for i, layer in enumerate(layers) if layer.prunable
    }
    return SubmodelSpec(ratio=ratio, kept=kept)
