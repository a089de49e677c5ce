"""The contract of a mask policy: the round's clients in, one :class:`SubmodelSpec` per client out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tasks import LayerSpec
from tasks.structure import Structure

from .submodel import SubmodelSpec

__all__ = ["MaskPolicy", "Network", "RoundClient"]


@dataclass(frozen=True)
class RoundClient:
    """A client sampled this round: the key that seeds its choices, and its ratio."""

    key: int
    ratio: float


Network = Structure | Sequence[LayerSpec]


class MaskPolicy(Protocol):
    def __call__(self, layers: Network, clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        """One spec per client (same order); ``params`` = the global x and y by parameter name."""
        ...
