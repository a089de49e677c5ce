"""Mask policies: which output units of each prunable layer every sampled client keeps in a round.

A policy sees the whole round (the sampled clients and their ratios, the current global
parameters) and returns one :class:`SubmodelSpec` per client. It works on the unit groups of the
network's :class:`~tasks.structure.Structure` (a layer chain's prunable layers, or the coupled
channel groups of any network) and never on the architecture: each group keeps
``ceil(ratio * width)`` units.

- ``static``     (HeteroFL): the leading units, always the same.
- ``tail``: the trailing units, always the same (``static`` mirrored: a round of ``static`` and
  ``tail`` clients below the full width trains both ends of every layer).
- ``rolling``    (FedRolex): a window that shifts by one unit per round (wrapping around).
- ``random``     (Federated Dropout): a uniform subset, seeded by (seed, round, client, layer).
- ``importance``: units drawn with probability proportional to their squared norm (for a layer: its
  row of the weight matrix and bias; for a coupled group: every coordinate the unit owns) in the
  current global model, a different draw per client and round.
- ``coverage``   (ours): staggered windows placed so that the minimum number of clients covering any
  coordinate (C_x*, C_y*, which govern the convergence rate) is as large as the round's budgets
  allow, in the order ``coverage-objective`` names. See :class:`CoveragePolicy`.
- ``combined``   (ours): nested windows (as ``static``) for the round's largest clients, fixed
  staggered windows (as ``coverage``, without its rotation) for the others. See :class:`CombinedPolicy`.
- ``ordered-dropout`` (FjORD): the leading units (as ``static``); each client step trains a nested
  width inside them (``client_app/nested.py``).
- ``nested-coverage`` (ours): a leading core for the nested widths, the rest of the budget where
  the round's coverage is lowest; steps as ``ordered-dropout``. See :mod:`rabo_pruning.nested`.

:data:`POLICIES` names them all, once: the ``mask-policy`` key's allowed values and
:data:`NESTED_POLICIES` are read from it, so a new policy is its class and one row there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tasks.structure import as_structure

from .coverage import Objective, kept_units, window
from .nested import NestedCoveragePolicy
from .placement import place
from .policy import MaskPolicy, Network, RoundClient
from .submodel import SubmodelSpec


class _PerLayerPolicy:
    """A policy whose choice for one client and group ignores the other clients."""

    needs_energy = False

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, layers: Network, clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        structure = as_structure(layers)
        groups = list(enumerate(structure.groups))
        energy = {i: structure.unit_energy(i, params) if self.needs_energy else None for i, _ in groups}
        return [
            SubmodelSpec(kept={
                group.name: self.choose(i, group.width, kept_units(group.width, c.ratio), server_round,
                                        c.key, energy[i])
                for i, group in groups
            })
            for c in clients
        ]


class StaticPolicy(_PerLayerPolicy):
    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        return np.arange(keep)


class TailPolicy(_PerLayerPolicy):
    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        return np.arange(width - keep, width)


class RollingPolicy(_PerLayerPolicy):
    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        start = (server_round - 1) % width
        return np.sort((start + np.arange(keep)) % width)


@dataclass(frozen=True)
class RandomPolicy(_PerLayerPolicy):
    seed: int

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, server_round, client_key, layer_index])
        return np.sort(rng.choice(width, size=keep, replace=False))


@dataclass(frozen=True)
class ImportancePolicy(_PerLayerPolicy):
    """Units drawn by importance: unit u of a layer is drawn with probability proportional to its
    importance, the squared L2 norm of its coordinates (a layer's row of the weight matrix and its
    bias entry; :meth:`~tasks.structure.Structure.unit_energy`) in the current global model (a
    unit's share of the group's energy), without replacement, seeded by
    (seed, round, client, layer). Units of larger norm are kept more often, and every client of a
    round gets its own draw, so the small clients do not all lock onto the same units (the
    deterministic top-k did: every client of a ratio kept the same units every round)."""

    seed: int
    needs_energy = True

    def choose(self, layer_index: int, width: int, keep: int, server_round: int, client_key: int,
               energy: np.ndarray | None) -> np.ndarray:
        assert energy is not None
        if keep >= width:
            return np.arange(width)
        # a unit of zero norm keeps a tiny chance: the draw needs `keep` units of positive weight
        energy = np.where(np.isfinite(energy), energy, 0.0) + 1e-12 * (float(np.nanmax(energy)) or 1.0)
        rng = np.random.default_rng([self.seed, server_round, client_key, layer_index])
        return np.sort(rng.choice(width, size=keep, replace=False, p=energy / energy.sum()))


@dataclass(frozen=True)
class CoveragePolicy:
    """Staggered windows that maximise the round's minimum per-coordinate coverage (C_x*, C_y*).

    Every client keeps, in each prunable layer, a cyclic window of ``ceil(ratio * width)`` units,
    placed by :func:`rabo_pruning.placement.place` for the round's ratios: (C_x*, C_y*) maximised
    lexicographically in the order ``objective`` names (``x-first``: C_x* then C_y*; ``y-first``: the
    reverse; the next criteria are fewer coordinates at each minimum). The placement reaches the
    optimum over window placements on every mix of up to 6 clients and widths up to 8 that
    ``tests/test_placement.py`` draws (checked against an exact integer programme), and
    ``benchmarks/placement.py`` measures its gap on the real widths. Bounds for any placement:
    :func:`rabo_pruning.coverage.coverage_bounds`.

    Each round every layer's windows shift by one more unit (all clients together, which changes
    no coordinate's coverage), so that the leftover coverage moves across units from round to round.
    Clients of equal ratio are placed in the order of their keys. Deterministic given the clients
    and the round.
    """

    objective: Objective = "x-first"

    nested = False
    """CombinedPolicy: the largest clients keep leading windows, the others fixed staggered ones."""

    def __call__(self, layers: Network, clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        if not clients:  # e.g. drop-weak in a round that sampled no full-size client
            return []
        order = sorted(range(len(clients)), key=lambda n: (-clients[n].ratio, clients[n].key))
        ratios = [clients[n].ratio for n in order]
        structure = as_structure(layers)
        prunable = structure.groups
        keep = np.array([[kept_units(layer.width, r) for layer in prunable] for r in ratios], dtype=np.int64)
        pinned = None
        if self.nested and len(ratios) > 0:
            pinned = keep == keep.max(axis=0, keepdims=True)
        placement = place(structure, ratios, self.objective, pinned)
        shift = 0 if self.nested else server_round - 1
        kept: list[dict[str, np.ndarray]] = [{} for _ in clients]
        for row, n in enumerate(order):
            for p, layer in enumerate(prunable):
                start = (int(placement.starts[row, p]) + shift) % layer.width
                kept[n][layer.name] = window(layer.width, int(keep[row, p]), start)
        return [SubmodelSpec(kept=units) for units in kept]


@dataclass(frozen=True)
class CombinedPolicy(CoveragePolicy):
    """Nested windows for the round's largest clients, fixed staggered windows for the others.

    Per prunable layer, the round's largest clients keep the leading units (as HeteroFL's
    ``static``), and the others are placed as by :class:`CoveragePolicy` (same objective) around
    them, but without its rotation. The placement depends only on the round's clients, so with the
    same clients every round each submodel is the same small network every round (what
    ``coverage``'s moving windows lose), while the smaller clients still train every unit between
    them rather than all the leading ones: their data reaches the whole model, not only its first
    units. Meant for rounds with full-size clients: when the largest clients are smaller than the
    model, they all share the same leading units and part of x stays untrained (docs/results.md,
    mask policies: 51 % of x trained with ratios 1/2 and 1/4).
    """

    nested = True


@dataclass(frozen=True)
class PolicyRequest:
    """What a policy is built from: the run's ``seed`` (random, importance), ``coverage-objective``
    (what coverage and combined maximise first) and ``ratio-levels`` (nested-coverage's widths)."""

    seed: int
    coverage_objective: Objective
    levels: tuple[float, ...]


@dataclass(frozen=True)
class PolicyEntry:
    build: Callable[[PolicyRequest], MaskPolicy]
    nested: bool = False
    """Its clients draw a nested width per local step inside their units (``client_app/nested.py``)."""


POLICIES: dict[str, PolicyEntry] = {
    "static": PolicyEntry(lambda _: StaticPolicy()),
    "rolling": PolicyEntry(lambda _: RollingPolicy()),
    "random": PolicyEntry(lambda r: RandomPolicy(r.seed)),
    "importance": PolicyEntry(lambda r: ImportancePolicy(r.seed)),
    "coverage": PolicyEntry(lambda r: CoveragePolicy(r.coverage_objective)),
    "combined": PolicyEntry(lambda r: CombinedPolicy(r.coverage_objective)),
    "ordered-dropout": PolicyEntry(lambda _: StaticPolicy(), nested=True),  # the leading units
    "nested-coverage": PolicyEntry(lambda r: NestedCoveragePolicy(r.levels), nested=True),
    "tail": PolicyEntry(lambda _: TailPolicy()),
}
"""Every mask policy by name: the ``mask-policy`` key's allowed values, in this order."""
MASK_POLICIES = tuple(POLICIES)
MaskPolicyName = Literal[MASK_POLICIES]  # type: ignore[valid-type]
NESTED_POLICIES = tuple(name for name, entry in POLICIES.items() if entry.nested)
"""The policies whose clients draw a nested width per step (``client_app/nested.py``)."""


def make_mask_policy(name: str, seed: int, coverage_objective: Objective = CoveragePolicy.objective,
                     levels: Sequence[float] = NestedCoveragePolicy.levels) -> MaskPolicy:
    """The policy called ``name`` (:data:`POLICIES`), built from :class:`PolicyRequest`'s values."""
    if name not in POLICIES:
        raise ValueError(f"unknown mask-policy '{name}'; allowed: {', '.join(MASK_POLICIES)}")
    return POLICIES[name].build(PolicyRequest(seed, coverage_objective, tuple(levels)))


def submodel_spec(layers: Network, ratio: float, policy: MaskPolicy | None = None,
                  server_round: int = 1, client_key: int = 0,
                  params: Mapping[str, np.ndarray] | None = None) -> SubmodelSpec:
    """The spec of one client alone (``static`` unless another policy is given)."""
    policy = policy or StaticPolicy()
    return policy(layers, [RoundClient(client_key, ratio)], server_round, params or {})[0]
