"""Mask policies: which output units of each prunable layer every sampled client keeps in a round.

A policy sees the whole round (the sampled clients and their ratios, the current global
parameters) and returns one :class:`SubmodelSpec` per client. Each layer keeps
``ceil(ratio * width)`` units.

- ``static``     (HeteroFL): the leading units, always the same.
- ``rolling``    (FedRolex): a window that shifts by one unit per round (wrapping around).
- ``random``     (Federated Dropout): a uniform subset, seeded by (seed, round, client, layer).
- ``importance``: the units whose weights (row of the weight matrix and bias) have the largest
  L2 norm in the current global model; every client of a ratio keeps the same units.
- ``coverage``   (ours): staggered windows chosen greedily so that the minimum number of clients
  covering any coordinate (C*, which governs the convergence rate) is as large as the round's
  budgets allow. See :class:`CoveragePolicy`.
- ``combined``   (ours): nested windows (as ``static``) for the round's largest clients, fixed
  staggered windows (as ``coverage``, without its rotation) for the others. See :class:`CombinedPolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tasks import LayerSpec

from .submodel import SubmodelSpec

MASK_POLICIES = ("static", "rolling", "random", "importance", "coverage", "combined")


@dataclass(frozen=True)
class RoundClient:
    """A client sampled this round: the key that seeds its choices, and its ratio."""

    key: int
    ratio: float


class MaskPolicy(Protocol):
    def __call__(self, layers: tuple[LayerSpec, ...], clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        """One spec per client (same order); ``params`` = the global x and y by parameter name."""
        ...


def kept_units(width: int, ratio: float) -> int:
    """Units a layer keeps at ``ratio``: ceil(ratio * width), at least 1."""
    return max(1, math.ceil(ratio * width - 1e-9))


def _prunable(layers: tuple[LayerSpec, ...]) -> list[tuple[int, LayerSpec]]:
    return [(i, layer) for i, layer in enumerate(layers) if layer.prunable]


class _PerLayerPolicy:
    """A policy whose choice for one client and layer ignores the other clients."""

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               weight: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, layers: tuple[LayerSpec, ...], clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        return [
            SubmodelSpec(ratio=c.ratio, kept={
                layer.name: self.choose(i, layer.width, kept_units(layer.width, c.ratio), server_round,
                                        c.key, params.get(f"{layer.name}.weight"))
                for i, layer in _prunable(layers)
            })
            for c in clients
        ]


class StaticPolicy(_PerLayerPolicy):
    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               weight: np.ndarray | None) -> np.ndarray:
        return np.arange(keep)


class RollingPolicy(_PerLayerPolicy):
    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               weight: np.ndarray | None) -> np.ndarray:
        start = (server_round - 1) % width
        return np.sort((start + np.arange(keep)) % width)


@dataclass(frozen=True)
class RandomPolicy(_PerLayerPolicy):
    seed: int

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               weight: np.ndarray | None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, server_round, client_key, layer_index])
        return np.sort(rng.choice(width, size=keep, replace=False))


class ImportancePolicy(_PerLayerPolicy):
    """Largest-norm units of the current global weights (ties: the lower index)."""

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               weight: np.ndarray | None) -> np.ndarray:
        if weight is None:
            raise ValueError(f"importance masks need the weights of prunable layer {layer_index}")
        norms = np.sqrt(np.sum(np.square(weight.reshape(width, -1), dtype=np.float64), axis=1))
        return np.sort(np.argsort(-norms, kind="stable")[:keep])


class CoveragePolicy:
    """Staggered windows that maximise the round's minimum per-coordinate coverage.

    Every client keeps, in each prunable layer, a contiguous (cyclic) window of its
    ``ceil(ratio * width)`` units. Clients are placed one after another, largest ratio first;
    for each layer the window start is chosen, among all ``width`` starts, to maximise the new
    minimum coverage of that layer's coordinates: its units (the bias) and, when the previous layer
    is prunable too, every (unit, previous unit) pair of the weight matrix, given the client's
    window in the previous layer; then the minimum coverage of the units alone. Ties go to fewer
    coordinates at the minimum, then to the start
    nearest the round's rotation (one unit per round, as ``rolling``), so that the leftover
    coverage moves across units from round to round. Deterministic given the clients and the round.

    For units alone this reaches the optimum floor(sum_i k_i / width); for weight entries no
    assignment can exceed floor(sum_i r_i^2) clients, which the greedy approaches.
    """

    nested = False
    """CombinedPolicy: the largest clients keep leading windows, the others fixed staggered ones."""

    def __call__(self, layers: tuple[LayerSpec, ...], clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        order = sorted(range(len(clients)), key=lambda n: (-clients[n].ratio, clients[n].key))
        units = {layer.name: np.zeros(layer.width, dtype=np.int64) for _, layer in _prunable(layers)}
        pairs: dict[str, np.ndarray] = {}
        for i, layer in _prunable(layers):
            if i > 0 and layers[i - 1].prunable:
                pairs[layer.name] = np.zeros((layer.width, layers[i - 1].width), dtype=np.int64)
        kept: list[dict[str, np.ndarray]] = [{} for _ in clients]
        largest = {layer.name: max((kept_units(layer.width, c.ratio) for c in clients), default=0)
                   for _, layer in _prunable(layers)}
        for n in order:
            for i, layer in _prunable(layers):
                previous = kept[n].get(layers[i - 1].name) if i > 0 else None
                keep = kept_units(layer.width, clients[n].ratio)
                if self.nested and keep == largest[layer.name]:
                    window = np.arange(keep)
                else:
                    window = self._best_window(layer, keep, 1 if self.nested else server_round,
                                               units[layer.name], pairs.get(layer.name), previous)
                units[layer.name][window] += 1
                if layer.name in pairs and previous is not None:
                    pairs[layer.name][np.ix_(window, previous)] += 1
                kept[n][layer.name] = window
        return [SubmodelSpec(ratio=c.ratio, kept=kept[n]) for n, c in enumerate(clients)]

    @staticmethod
    def _best_window(layer: LayerSpec, keep: int, server_round: int, units: np.ndarray,
                     pairs: np.ndarray | None, previous: np.ndarray | None) -> np.ndarray:
        width = layer.width
        if keep >= width:
            return np.arange(width)
        rotation = (server_round - 1) % width
        best: tuple[int, ...] | None = None
        best_window = np.arange(keep)
        for start in range(width):
            window = np.sort((start + np.arange(keep)) % width)
            new_units = units.copy()
            new_units[window] += 1
            unit_low = int(new_units.min())
            unit_at_low = int(np.sum(new_units == unit_low))
            low, at_low = unit_low, unit_at_low
            if pairs is not None and previous is not None:
                new_pairs = pairs.copy()
                new_pairs[np.ix_(window, previous)] += 1
                pair_low = int(new_pairs.min())
                if pair_low < low:
                    low, at_low = pair_low, int(np.sum(new_pairs == pair_low))
                elif pair_low == low:
                    at_low += int(np.sum(new_pairs == pair_low))
            score = (low, unit_low, -at_low, -unit_at_low, -((start - rotation) % width))
            if best is None or score > best:
                best, best_window = score, window
        return best_window


class CombinedPolicy(CoveragePolicy):
    """Nested windows for the round's largest clients, fixed staggered windows for the others.

    Per prunable layer, the round's largest clients keep the leading units (as HeteroFL's
    ``static``), and the others are placed as by :class:`CoveragePolicy` but without its rotation:
    first on the units nobody covers yet, then where coverage is lowest. The placement depends only
    on the round's clients, so with the same clients every round each submodel is the same small
    network every round (what ``coverage``'s moving windows lose), while the smaller clients still
    train every unit between them rather than all the leading ones: their data reaches the whole
    model, not only its first units.
    """

    nested = True


def make_mask_policy(name: str, seed: int) -> MaskPolicy:
    policies: dict[str, MaskPolicy] = {
        "static": StaticPolicy(), "rolling": RollingPolicy(), "random": RandomPolicy(seed),
        "importance": ImportancePolicy(), "coverage": CoveragePolicy(), "combined": CombinedPolicy(),
    }
    if name not in policies:
        raise ValueError(f"unknown mask-policy '{name}'; allowed: {', '.join(MASK_POLICIES)}")
    return policies[name]


def submodel_spec(layers: tuple[LayerSpec, ...], ratio: float, policy: MaskPolicy | None = None,
                  server_round: int = 1, client_key: int = 0,
                  params: Mapping[str, np.ndarray] | None = None) -> SubmodelSpec:
    """The spec of one client alone (``static`` unless another policy is given)."""
    policy = policy or StaticPolicy()
    return policy(layers, [RoundClient(client_key, ratio)], server_round, params or {})[0]
