"""What dual pruning needs to know about a network: its units, and where each tensor reads them.

A *unit group* is a set of coupled channels that a submodel keeps or drops together: the output
channels of a layer chain's layer, or, in a real network, every channel that a residual add,
a normalization layer, a depthwise convolution or an attention block ties to them
(:mod:`tasks.graph` derives them from the network). A :class:`Structure` lists the prunable groups
and maps a choice of kept units per group to the kept indices of every tensor, dim by dim; the
mask policies, the coverage placement and the per-coordinate aggregation (``rabo_pruning``) work on
groups only and never look at the architecture.

Two implementations: :class:`ChainStructure` for a task that lists its layers as
:class:`~tasks.base.LayerSpec` (each layer fed by the previous one), and
:class:`tasks.graph.GraphStructure` for any ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np

from .base import LayerSpec, Role

Dims = tuple[np.ndarray | None, ...]
"""Kept indices of a tensor, per dim (``None``: the whole dim)."""


@dataclass(frozen=True)
class UnitGroup:
    """A prunable group: ``width`` units of role ``role`` (the role of the tensors that own it)."""

    name: str
    role: Role
    width: int


@dataclass(frozen=True)
class Block:
    """The coordinates of one tensor, as far as coverage goes.

    ``out`` / ``inp``: the position (in :attr:`Structure.groups`) of the group that indexes the
    tensor's first / second pruned dim, or ``None`` when that side keeps every unit. ``rows``: how
    many coordinates one unit of an input-only block stands for (the secondary placement criteria
    count coordinates).
    """

    role: str
    out: int | None
    inp: int | None
    rows: int


@runtime_checkable
class Structure(Protocol):
    """The network as dual pruning sees it."""

    groups: tuple[UnitGroup, ...]
    """The prunable groups, in a fixed order (a mask policy keeps units of each)."""
    classifier: LayerSpec
    """The layer whose rows are the classes (``head-rows`` weights them per class)."""

    def full_widths(self) -> dict[str, int]:
        """The widths a client needs to build the full model (every group at its full width)."""
        ...

    def blocks(self) -> tuple[Block, ...]:
        """One block per distinct (role, out group, in group) of the parameters."""
        ...

    def dims(self, kept: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Dims]:
        """Kept indices, per dim, of every tensor of ``shapes`` (parameters and buffers) when
        group ``g`` keeps units ``kept[g]`` (all of a group ``kept`` does not name)."""
        ...

    def unit_energy(self, group: int, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Squared L2 norm per unit of ``groups[group]`` over the coordinates it owns."""
        ...


class ChainStructure:
    """A layer chain: layer i's weight has its output units on dim 0 and layer i-1's (expanded by
    ``in_expand``) on dim 1; a layer that is not prunable keeps every output (the classifier)."""

    def __init__(self, layers: tuple[LayerSpec, ...]) -> None:
        self.layers = layers
        self.groups = tuple(UnitGroup(la.name, la.role, la.width) for la in layers if la.prunable)
        self.classifier = layers[-1]

    def full_widths(self) -> dict[str, int]:
        return {layer.name: layer.width for layer in self.layers}

    def blocks(self) -> tuple[Block, ...]:
        position = {group.name: p for p, group in enumerate(self.groups)}
        return tuple(
            Block(layer.role, position.get(layer.name),
                  position.get(self.layers[i - 1].name) if i > 0 else None, layer.width)
            for i, layer in enumerate(self.layers))

    def dims(self, kept: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Dims]:
        out: dict[str, Dims] = {}
        previous: np.ndarray | None = None
        for layer in self.layers:
            units = np.asarray(kept.get(layer.name, np.arange(layer.width)))
            if previous is None:  # the first layer reads the raw input: all of it
                inp = np.arange(shapes[f"{layer.name}.weight"][1])
            else:
                inp = (previous[:, None] * layer.in_expand + np.arange(layer.in_expand)).ravel()
            out[f"{layer.name}.weight"] = (units, inp)
            if layer.has_bias:
                out[f"{layer.name}.bias"] = (units,)
            previous = units
        return out

    def unit_energy(self, group: int, params: Mapping[str, np.ndarray]) -> np.ndarray:
        name, width = self.groups[group].name, self.groups[group].width
        if f"{name}.weight" not in params:
            raise ValueError(f"importance masks need the weights of prunable layer '{name}'")
        energy = np.sum(np.square(params[f"{name}.weight"].reshape(width, -1), dtype=np.float64), axis=1)
        if (bias := params.get(f"{name}.bias")) is not None:
            energy = energy + np.square(bias.astype(np.float64))
        return energy


@lru_cache(maxsize=64)
def _chain(layers: tuple[LayerSpec, ...]) -> ChainStructure:
    return ChainStructure(layers)


def as_structure(network: Structure | Sequence[LayerSpec]) -> Structure:
    """``network`` itself, or the :class:`ChainStructure` of a layer list (the same object for
    the same list, so that caches keyed by the structure hit)."""
    if isinstance(network, Structure):
        return network
    return _chain(tuple(network))
