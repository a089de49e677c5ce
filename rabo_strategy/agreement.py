"""The cosines the agreement screen judges a reply by: against the other replies' median, and
against the server's own update (rabo_strategy/screen.py says how they are used).

Each takes the replies' updates of a part stacked as rows over the part's (sampled) coordinates,
NaN where a reply did not cover one (:func:`~rabo_strategy.medians.stack_part`).

Example:
    >>> import numpy as np
    >>> stack = np.array([[1.0, 2.0, np.nan], [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    >>> cosines, counted = against_server({"x": stack}, {"x": np.array([1.0, 2.0, 0.0])}, 3)
    >>> [round(c["x"], 6) for c in cosines], counted
    ([1.0, 1.0, -1.0], [2, 2, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .medians import cosine, leave_group_out, leave_one_out, typical_size

__all__ = ["MIN_PEERS", "against_peers", "against_server"]

MIN_PEERS = 3
"""Other replies a coordinate needs for a reply to be judged on it (a median of 3 is set by their
majority)."""


def against_peers(stacks: Mapping[str, np.ndarray], inside: np.ndarray, ratios: Sequence[float],
                  cross_ratio: bool) -> tuple[list[dict[str, float]], list[dict[str, float]], list[int]]:
    """Per reply and part, its agreement and size against the members of ``inside`` (itself
    left out; ``cross_ratio``: the smaller agreement of that and of the other ratios' median),
    and its number of judged coordinates."""
    agreement: list[dict[str, float]] = [{} for _ in inside]
    size: list[dict[str, float]] = [{} for _ in inside]
    judged = [0] * len(inside)
    for part, stack in stacks.items():
        covered = ~np.isnan(stack)
        peers = (covered & inside[:, None]).sum(axis=0) - (covered & inside[:, None])
        references = [(leave_one_out(stack, inside), peers)]
        if cross_ratio:
            references.append(leave_group_out(stack, ratios, inside))
        typical = typical_size(stack, inside, ratios)
        for i, row in enumerate(stack):
            cosines = [c for ref, count in references
                       if (c := cosine(row, ref[i], covered[i] & (count[i] >= MIN_PEERS))) is not None]
            mask = covered[i] & (peers[i] >= MIN_PEERS)
            if not cosines or not mask.any():
                continue
            judged[i] += int(mask.sum())
            agreement[i][part] = min(cosines)
            typical_norm = float(np.linalg.norm(typical[i][mask]))
            size[i][part] = float(np.linalg.norm(row[mask])) / (typical_norm or 1e-300)
    return agreement, size, judged


def against_server(stacks: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray], size: int
                   ) -> tuple[list[dict[str, float]], list[int]]:
    """Per reply and part, the cosine of its update with the server's (``rows``) on the coordinates
    it covers where the server's update is not zero, and the number of those coordinates."""
    agreement: list[dict[str, float]] = [{} for _ in range(size)]
    counted = [0] * size
    for part, row in rows.items():
        for i, own in enumerate(stacks[part]):
            mask = ~np.isnan(own) & (row != 0)
            if (c := cosine(own, row, mask)) is not None:
                agreement[i][part] = c
                counted[i] += int(mask.sum())
    return agreement, counted
