"""Cheap plausibility checks for lazy clients: untrained rows and replayed replies.

A row (a unit: the first axis of a sliced tensor of x, y or v) that a reply returns exactly as it
was sent was not trained: ``untrained-rows`` counts it, and the trained coverage
(``coverage-x-trained-min``, ``coverage-y-trained-min``) leaves it out, beside the coverage of the
masks (C_x*, C_y*). It stays in the average as "no change", since an honest client's
dead unit returns its row unchanged too (dropping it would bias the average); a padded reply only
damps the others' steps there. A hypergradient row exactly zero is a value, not a lazy row. A
reply that changes nothing (every row as sent, h all zero) is refused. A reply
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
    >>> untrained = check(1, values, {"y:w": SliceIndex(None)}, sent, server_round=1)
    >>> untrained.slices["y:w"].out.tolist(), untrained.rows
    ([1], 1)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rabo_pruning.submodel import SliceIndex

__all__ = ["LazyCheck", "Untrained"]


def _digest(value: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Untrained:
    """The rows of a reply returned exactly as they were sent."""

    slices: dict[str, SliceIndex] = field(default_factory=dict)
    """Key ``part:param`` -> those rows, as a slice of the global tensor."""
    rows: int = 0
    """Their number (the round's ``untrained-rows`` sums it)."""


@dataclass
class LazyCheck:
    """Finds the untrained rows of a reply and refuses empty replies and replays of the previous
    round."""

    previous: set[str] = field(default_factory=set)
    """Digests of the tensors the previous round's accepted replies carried."""
    previous_round: int = 0
    """The round they are from (a round aggregated again is not a replay of itself)."""
    current: dict[int, set[str]] = field(default_factory=dict)
    """This round's, by node."""

    def __call__(self, node: int, values: Mapping[str, np.ndarray], index: Mapping[str, SliceIndex],
                 reference: Mapping[str, Mapping[str, np.ndarray]], server_round: int
                 ) -> Untrained:
        """The rows of ``values`` (keyed ``part:param``, at ``index``; ``reference``: the global
        tensors by reply part) left exactly as sent. ValueError for a
        reply that changed nothing (h: all zero) or replays a previous reply."""
        untrained, count, changed = {}, 0, False
        digests = self.current[node] = set()
        for key, value in values.items():
            part, name = key.split(":", 1)
            sent = np.zeros_like(value) if part == "h" else index[key].take(reference[part][name])
            moved = (np.any((value != sent).reshape(len(value), -1), axis=1) if value.ndim
                     else np.array([bool(value != sent)]))
            changed |= bool(moved.any())
            if part != "h" and value.ndim and not moved.all():  # a zero hypergradient row is a value
                full = index[key]
                out = np.arange(len(value)) if full.out is None else full.out
                untrained[key] = SliceIndex(out[~moved], full.inp, full.rest)
                count += int((~moved).sum())
            if moved.any() and value.size > 1:
                digest = _digest(value)
                if digest in self.previous and server_round > self.previous_round:
                    raise ValueError(f"{key} is identical to a tensor of a reply of the previous round "
                                     "(a replay)")
                digests.add(digest)
        if values and not changed:
            raise ValueError("every row was returned exactly as it was sent (nothing was trained)")
        return Untrained(untrained, count)

    def remember(self, accepted: Iterable[int], server_round: int) -> None:
        """End of a round: the tensors of the ``accepted`` nodes' replies (as they were checked,
        before any clipping) become the ones a replay would repeat."""
        self.previous = {d for node in accepted for d in self.current.get(node, ())}
        self.previous_round = server_round
        self.current = {}
