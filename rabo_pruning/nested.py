"""``nested-coverage``: nested widths every device can deploy, and coverage of the units that only
large devices reach.

With nested masks (``static``, ``ordered-dropout``) the units past a ratio's leading block are
trained only by the larger clients, so the data of the small ones never reaches them; with
staggered ones (``coverage``) every unit sees every kind of client, but no small network is
trained as a whole. This policy splits each client's budget:

- a **core**: the leading units of the largest ratio level below the client's ratio (its own
  ratio when no level is below it: the smallest clients keep only leading units). Every deployed
  width up to the core is a prefix of the client's submodel, so ordered dropout
  (``client_app/nested.py``) trains each of them as a network of its own;
- a **window**: the rest of its ``ceil(ratio * width)`` units, outside its core, chosen in every
  group where the round's coverage is lowest (the cores of all the round's clients and the
  windows placed before it counted; ties go round the group from where the previous window
  ended, so windows are staggered and, where counts tie, contiguous). Clients are placed largest
  first, then by key. A full-size client holds everything.

The client's whole submodel (core and window) is the width it trains when a step draws its own
ratio. Deterministic given the round's clients; with the same clients every round, every client
keeps the same units every round. The leading units of each ratio are what a device deploys
(``server_app/evaluation.py``), as with every policy.

Example::

    >>> from tasks import LayerSpec
    >>> policy = NestedCoveragePolicy(levels=(1.0, 0.5, 0.25, 0.125))
    >>> layers = [LayerSpec("fc1", "x", 8, True), LayerSpec("head", "y", 2, False)]
    >>> specs = policy(layers, [RoundClient(0, 0.5), RoundClient(1, 0.25)], 1, {})
    >>> [spec.kept["fc1"].tolist() for spec in specs]  # cores [0, 1] and [0]; windows 2-3 and 4
    [[0, 1, 2, 3], [0, 4]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.structure import as_structure

from .coverage import kept_units
from .policy import Network, RoundClient
from .submodel import SubmodelSpec

__all__ = ["NestedCoveragePolicy", "core_ratio"]


def core_ratio(ratio: float, levels: Sequence[float]) -> float:
    """The ratio of a client's nested core: the largest level below ``ratio``, else ``ratio``."""
    below = [level for level in levels if level < ratio - 1e-12]
    return max(below) if below else ratio


@dataclass(frozen=True)
class NestedCoveragePolicy:
    """Leading cores for the nested widths, least-covered windows for the rest (module docstring).

    Args:
        levels: the run's ``ratio-levels``: the deployable widths the cores are made of.
    """

    levels: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)

    def __call__(self, layers: Network, clients: Sequence[RoundClient], server_round: int,
                 params: Mapping[str, np.ndarray]) -> list[SubmodelSpec]:
        order = sorted(range(len(clients)), key=lambda n: (-clients[n].ratio, clients[n].key))
        kept: list[dict[str, np.ndarray]] = [{} for _ in clients]
        for group in as_structure(layers).groups:
            width = group.width
            keep = [kept_units(width, clients[n].ratio) for n in order]
            core = [min(k, kept_units(width, core_ratio(clients[n].ratio, self.levels)))
                    for n, k in zip(order, keep, strict=True)]
            count = np.zeros(width, dtype=np.int64)
            for size in core:
                count[:size] += 1
            cursor = 0
            for n, k, size in zip(order, keep, core, strict=True):
                outside = np.arange(size, width)
                rank = np.lexsort(((outside - cursor) % width, count[outside]))
                window = outside[rank[:k - size]]
                count[window] += 1
                if len(window):
                    cursor = (int(window[-1]) + 1) % width
                kept[n][group.name] = np.sort(np.concatenate([np.arange(size), window]))
        return [SubmodelSpec(kept=units) for units in kept]
