"""A node's agreement record: how its replies agreed with a reference over the rounds it was judged.

A record keeps two summaries of a node's per-round agreement (a cosine, averaged over the reply's
parts): its mean, with :data:`PRIOR_ROUNDS` neutral rounds (agreement 0) in front, which
separates a node that keeps disagreeing from an honest one whose single rounds are noisy; and a
fast average (weight :data:`FAST_MEMORY` on the past, starting at 0), which catches a node that
turns after a good record. The agreement screen keeps one record per node and reference (the
other replies; the server's root-set update) and refuses a reply when any of them falls.

Example:
    >>> record = None
    >>> for agreement in (-0.5, -0.5):
    ...     record = updated(record, agreement)
    >>> [round(v, 3) for v in record], refuses(record, -0.1)
    ([-0.25, 2.0, -0.375], True)
"""

from __future__ import annotations

__all__ = ["FAST_FACTOR", "FAST_MEMORY", "PRIOR_ROUNDS", "Record", "refuses", "updated"]

PRIOR_ROUNDS = 2
"""Neutral rounds (agreement 0) in front of a node's mean agreement: one noisy first round does not
refuse an honest node."""
FAST_MEMORY = 0.5
"""The weight of a node's past rounds in its fast agreement average."""
FAST_FACTOR = 1.5
"""A node is refused when its fast average is at most this times ``min-agreement``."""

Record = tuple[float, float, float]
"""(mean agreement, rounds judged, fast average)."""


def updated(record: Record | None, agreement: float) -> Record:
    """``record`` (None: a node never judged) with one more round of ``agreement``."""
    mean, rounds, fast = record or (0.0, 0.0, 0.0)  # the prior: neutral rounds
    return ((mean * (rounds + PRIOR_ROUNDS) + agreement) / (rounds + PRIOR_ROUNDS + 1), rounds + 1,
            FAST_MEMORY * fast + (1 - FAST_MEMORY) * agreement)


def refuses(record: Record | None, min_agreement: float) -> bool:
    """Whether a node with ``record`` is refused: its mean at most ``min_agreement`` or its fast
    average at most :data:`FAST_FACTOR` times that (never with ``min_agreement`` -1 or no record)."""
    return (record is not None and min_agreement > -1
            and not (record[0] > min_agreement and record[2] > FAST_FACTOR * min_agreement))
