"""Dual pruning: which coordinates of x, y (and v) a client's submodel holds.

A :class:`SubmodelSpec` lists, for each prunable unit group, the kept units, and, for per-sample
parameters (one entry per training sample, e.g. hyper-cleaning's sample weights), the global
coordinates the client owns. The index of every tensor follows from the network's
:class:`~tasks.structure.Structure` (a layer chain, or the coupled groups of any network); groups
a spec does not name keep every unit. Slicing gives a dense, physically smaller tensor; scattering
puts it back at the same coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks import LayerSpec
from tasks.structure import Structure, as_structure


@dataclass(frozen=True)
class SliceIndex:
    """Kept indices on dim 0 (``out``), dim 1 (``inp``) and the dims after (``rest``); ``None``
    keeps the whole dim."""

    out: np.ndarray | None
    inp: np.ndarray | None = None
    rest: tuple[np.ndarray | None, ...] = ()

    @property
    def dims(self) -> tuple[np.ndarray | None, ...]:
        return (self.out, self.inp, *self.rest) if self.inp is not None or self.rest else (self.out,)

    def take(self, array: np.ndarray) -> np.ndarray:
        part = array
        for axis, kept in enumerate(self.dims):
            if kept is not None:
                part = np.take(part, kept, axis=axis)
        return part

    def _grid(self, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        dims = self.dims + (None,) * (len(shape) - len(self.dims))
        return np.ix_(*(np.arange(n) if kept is None else kept for kept, n in zip(dims, shape, strict=True)))

    def add_into(self, target: np.ndarray, values: np.ndarray) -> None:
        """``target[slice] += values`` (indices are unique, so this is exact)."""
        target[self._grid(target.shape)] += values

    def shape(self, full_shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = self.dims + (None,) * (len(full_shape) - len(self.dims))
        return tuple(n if kept is None else len(kept) for kept, n in zip(dims, full_shape, strict=True))


def slice_index(dims: Sequence[np.ndarray | None]) -> SliceIndex:
    return SliceIndex(dims[0], dims[1] if len(dims) > 1 else None, tuple(dims[2:]))


@dataclass(frozen=True)
class SubmodelSpec:
    """A client's submodel: the kept units of each prunable group."""

    kept: Mapping[str, np.ndarray]
    sample_coords: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Per-sample parameter name -> the global coordinates of the client's samples, in its order."""

    def widths(self, network: Structure | Sequence[LayerSpec]) -> dict[str, int]:
        """The widths a client builds its submodel at (every group's, the unpruned ones' full)."""
        full = as_structure(network).full_widths()
        return {name: len(self.kept[name]) if name in self.kept else width for name, width in full.items()}

    def indices(self, network: Structure | Sequence[LayerSpec],
                shapes: Mapping[str, tuple[int, ...]]) -> dict[str, SliceIndex]:
        """SliceIndex of every tensor of ``shapes`` and of every per-sample parameter."""
        index = {name: SliceIndex(np.asarray(coords)) for name, coords in self.sample_coords.items()}
        dims = as_structure(network).dims(self.kept, shapes)
        index.update({name: slice_index(d) for name, d in dims.items() if name in shapes})
        return index

    def take(self, network: Structure | Sequence[LayerSpec],
             parts: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
        """The submodel's x and y: every tensor of ``parts['x']`` and ``parts['y']`` sliced where
        the spec indexes it (the groups' units, per-sample coordinates), whole elsewhere."""
        shapes = {name: a.shape for part in ("x", "y") for name, a in parts[part].items()}
        index = self.indices(network, shapes)
        return {part: {name: index[name].take(a) if name in index else a for name, a in parts[part].items()}
                for part in ("x", "y")}
