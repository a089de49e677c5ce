"""Cheap plausibility checks for lazy clients: untrained rows and replayed replies.

A row (a unit: the first axis of a sliced tensor) that a reply returns exactly as it was sent
(a hypergradient row exactly zero) was not trained: it is taken out of the reply before the
aggregation, so it neither pulls the average back to the old value nor counts in the coverage
(C_x*, C_y* report what was trained). A reply that leaves every row as sent is refused. A reply
carrying a tensor identical to one of the previous round's replies (any node's) is a replay and is
refused: the global model moved in between, so an honest client cannot return the same values.

What these checks cannot see: a client that changes its rows a little without training them
(noise around the sent values), or that trains on other data than its own. The agreement screen
(:mod:`rabo_strategy.screen`) sees the first when it moves against the others' direction.

Example:
    >>> import numpy as np
    >>> from rabo_pruning.submodel import SliceIndex
    >>> check = LazyCheck()
    >>> sent = {"y": {"w": np.zeros((3, 2))}}
    >>> values = {"y:w": np.array([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])}
    >>> kept, index, untrained = check(1, values, {"y:w": SliceIndex(None)}, sent, server_round=1)
    >>> index["y:w"].out.tolist(), untrained
    ([0, 2], 1)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rabo_pruning.submodel import SliceIndex

__all__ = ["LazyCheck"]


def _digest(value: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()


@dataclass
class LazyCheck:
    """Drops the untrained rows of a reply and refuses replays of the previous round."""

    previous: set[str] = field(default_factory=set)
    """Digests of the tensors the previous round's accepted replies carried."""
    previous_round: int = 0
    """The round they are from (a round aggregated again is not a replay of itself)."""
    current: dict[int, set[str]] = field(default_factory=dict)
    """This round's, by node."""

    def __call__(self, node: int, values: Mapping[str, np.ndarray], index: Mapping[str, SliceIndex],
                 reference: Mapping[str, Mapping[str, np.ndarray]], server_round: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, SliceIndex], int]:
        """``values`` (keyed ``part:param``, at ``index``) without the rows left as sent
        (``reference``: the global tensors by reply part; h rows: zero), their index, and the number
        of rows dropped. ValueError for a reply that trained no row or replays a previous reply."""
        kept_values, kept_index, dropped, total = {}, {}, 0, 0
        digests = self.current[node] = set()
        for key, value in values.items():
            part, name = key.split(":", 1)
            sent = np.zeros_like(value) if part == "h" else index[key].take(reference[part][name])
            moved = (np.any((value != sent).reshape(len(value), -1), axis=1) if value.ndim
                     else np.array([True]))
            total, dropped = total + moved.size, dropped + int((~moved).sum())
            rows = np.flatnonzero(moved)
            if value.ndim and rows.size < len(value):
                full = index[key]
                out = np.arange(len(value)) if full.out is None else full.out
                kept_index[key] = SliceIndex(out[rows], full.inp, full.rest)
                kept_values[key] = value[rows]
            else:
                kept_values[key], kept_index[key] = value, index[key]
            if rows.size and kept_values[key].size > 1:
                digest = _digest(kept_values[key])
                if digest in self.previous and server_round > self.previous_round:
                    raise ValueError(f"{key} is identical to a tensor of a reply of the previous round "
                                     "(a replay)")
                digests.add(digest)
        if total and dropped == total:
            raise ValueError("every row was returned exactly as it was sent (nothing was trained)")
        return kept_values, kept_index, dropped

    def remember(self, accepted: Iterable[int], server_round: int) -> None:
        """End of a round: the tensors of the ``accepted`` nodes' replies (as they were checked,
        before any clipping) become the ones a replay would repeat."""
        self.previous = {d for node in accepted for d in self.current.get(node, ())}
        self.previous_round = server_round
        self.current = {}
