"""Dual pruning: which coordinates of x, y (and v) a client's submodel holds.

A :class:`SubmodelSpec` lists, for each prunable layer, the kept output units, and, for per-sample
parameters (one entry per training sample, e.g. hyper-cleaning's sample weights), the global
coordinates the client owns. The index of every
parameter follows from the task's layer list: a weight keeps its layer's output units on dim 0 and
the previous layer's output units (expanded by ``in_expand``) on dim 1; non-prunable layers keep
all outputs (the classifier keeps every class). Slicing gives a dense, physically smaller tensor;
scattering puts it back at the same coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tasks import LayerSpec


@dataclass(frozen=True)
class SliceIndex:
    """Kept indices on dim 0 (``out``) and, for weights, dim 1 (``inp``)."""

    out: np.ndarray
    inp: np.ndarray | None = None

    def take(self, array: np.ndarray) -> np.ndarray:
        part = array[self.out]
        return part if self.inp is None else part[:, self.inp]

    def add_into(self, target: np.ndarray, values: np.ndarray) -> None:
        """``target[slice] += values`` (indices are unique, so this is exact)."""
        if self.inp is None:
            target[self.out] += values
        else:
            target[self.out[:, None], self.inp[None, :]] += values

    def shape(self, full_shape: tuple[int, ...]) -> tuple[int, ...]:
        kept = (len(self.out),) if self.inp is None else (len(self.out), len(self.inp))
        return kept + tuple(full_shape[len(kept):])


@dataclass(frozen=True)
class SubmodelSpec:
    """A client's submodel: the kept output units of each prunable layer."""

    kept: Mapping[str, np.ndarray]
    owned: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Per-sample parameter name -> the global coordinates of the client's samples, in its order."""

    def widths(self, layers: tuple[LayerSpec, ...]) -> dict[str, int]:
        return {layer.name: len(self.kept.get(layer.name, range(layer.width))) for layer in layers}

    def indices(
        self, layers: tuple[LayerSpec, ...], shapes: Mapping[str, tuple[int, ...]]
    ) -> dict[str, SliceIndex]:
        """SliceIndex of every parameter ``{layer}.weight`` / ``{layer}.bias`` and per-sample one."""
        index = {name: SliceIndex(np.asarray(coords)) for name, coords in self.owned.items()}
        previous: np.ndarray | None = None
        for layer in layers:
            out = self.kept.get(layer.name, np.arange(layer.width))
            if previous is None:  # the first layer reads the raw input: all of it
                inp = np.arange(shapes[f"{layer.name}.weight"][1])
            else:
                inp = (previous[:, None] * layer.in_expand + np.arange(layer.in_expand)).ravel()
            index[f"{layer.name}.weight"] = SliceIndex(out, inp)
            if layer.has_bias:
                index[f"{layer.name}.bias"] = SliceIndex(out)
            previous = out
        return index
