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

from collections.abc import Mapping

__all__ = ["FAST_FACTOR", "FAST_MEMORY", "PRIOR_ROUNDS", "Record", "refusal", "refuses", "updated"]

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


def refusal(min_agreement: float, max_size: float, records: Mapping[str, Record | None],
            agreement: Mapping[str, float], server: Mapping[str, float],
            size: Mapping[str, float]) -> str | None:
    """Why the agreement screen refuses a reply (None: it does not): a node's ``records`` by source
    ('peers', 'server') fell to ``min_agreement`` (this round's cosines: ``agreement`` with the
    others, ``server`` with the server's update), or a part's ``size`` exceeds ``max_size`` (0: off)."""
    for source, against, cosines in (("server", "the server's root-set update", server),
                                     ("peers", "the other replies", agreement)):
        if refuses(record := records[source], min_agreement):
            assert record is not None
            parts = ", ".join(f"{p} {c:.2f}" for p, c in sorted(cosines.items()))
            return (f"the node's updates disagree with {against}: its mean agreement is "
                    f"{record[0]:.3g} over {record[1]:g} rounds, its fast average {record[2]:.3g} "
                    f"(this round's cosines: {parts or 'none'}); min-agreement={min_agreement:g}")
    for part, ratio in sorted(size.items()):
        if max_size > 0 and not ratio <= max_size:
            return (f"part '{part}' update is {ratio:.3g}x the size of the other replies at its ratio "
                    f"(each measured against the typical update on its own coordinates), above "
                    f"max-update-norm-ratio={max_size:g}")
    return None
