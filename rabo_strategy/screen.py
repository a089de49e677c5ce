"""The agreement screen: each reply judged against the other replies, on the coordinates it shares.

A reply's update (returned minus sent; a hypergradient h as it is) is compared, coordinate by
coordinate, with a reference that it is never part of: the median of the other replies' updates,
on the coordinates that at least :data:`MIN_PEERS` of them covered (its *judged* coordinates).
Its *agreement* is the cosine between its update and that reference there, averaged over the
parts (x or h, y, v). A node's *record* keeps two summaries of its agreement over the rounds it
was judged (the server's history, checkpointed): its mean, with :data:`PRIOR_ROUNDS` neutral
rounds (agreement 0) in front, which separates a node that keeps disagreeing from an honest one
whose single rounds are noisy; and a fast average (weight :data:`FAST_MEMORY` on the past, which
starts at 0 too), which catches a node that turns after a good record. A reply is refused when its
mean is at most ``min_agreement`` or its fast average at most :data:`FAST_FACTOR` times that.

Colluders that are the majority of a coordinate's other clients set its median. Two passes keep
them out of the final reference: the first judges each reply by the smaller of its agreement with
the leave-one-out median of all the others and with the median of the replies at **other ratios**
(a group at one ratio never sits in its own reference); the second, and the last, judges every
reply against the median of the replies the first pass accepted (a reply again never its own).

Accepted updates are clipped per coordinate to ``clip`` times the typical size of the accepted
others there (:func:`~rabo_strategy.medians.typical_size`), so an update that passes the direction
test moves the average little more than an honest one. ``max_size`` (0: off) refuses an update
whose norm on its judged coordinates exceeds that many times the others' typical size there.

What it cannot see: a coordinate that fewer than :data:`MIN_PEERS` + 1 replies cover is protected
only through the judgement of the rest of its replies' coordinates (``unprotected-fraction`` in
the round metrics); a reply with no judged coordinate is accepted unjudged (``unscreened-replies``),
and in a round of fewer than :data:`MIN_REPLIES` replies no reply is refused for its direction.

Example:
    >>> import numpy as np
    >>> from rabo_pruning.submodel import SliceIndex
    >>> full, whole = {"w": np.zeros(4)}, {"x:w": SliceIndex(None)}
    >>> honest = [Sliced({"x:w": np.array([1.0, 1, 1, 1]) + 0.1 * i}, whole) for i in range(6)]
    >>> attacker = Sliced({"x:w": -np.ones(4)}, whole)
    >>> screen = AgreementScreen(min_agreement=0.0)
    >>> verdicts = screen([*honest, attacker], {"x": full}, [1.0] * 7, range(7))
    >>> [v.refused is not None for v in verdicts]
    [False, False, False, False, False, False, True]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .medians import Sliced, leave_group_out, leave_one_out, stack_part, typical_size, unstack_row, updates_of
from .replies import ParsedReply

__all__ = ["MIN_PEERS", "AgreementScreen", "Sliced", "Verdict"]

MIN_PEERS = 3
"""Other replies a coordinate needs for a reply to be judged on it (a median of 3 is set by their
majority)."""

SAMPLE = 65_536
"""Coordinates per part the direction and size are measured on (a cosine over that many is within
about 1/256 of the whole part's)."""
MIN_REPLIES = 6
"""Replies a round needs for the direction test to refuse any: with fewer, one honest client's
noise is as large as the signal (a 4-client MobileNet round's honest reply measured -0.33), and a
median of 5 others still tolerates 2 colluders."""
PRIOR_ROUNDS = 2
"""Neutral rounds (agreement 0) in front of a node's mean agreement: one noisy first round does not
refuse an honest node."""
FAST_MEMORY = 0.5
"""The weight of a node's past rounds in its fast agreement average."""
FAST_FACTOR = 1.5
"""A node is refused when its fast average is at most this times ``min-agreement``."""



@dataclass(frozen=True)
class Verdict:
    """One reply's screen: per part its agreement and size (NaN where the part was not judged),
    the number of judged coordinates, and why it is refused (None: accepted)."""

    agreement: Mapping[str, float]
    size: Mapping[str, float]
    judged: int
    refused: str | None
    clipped: dict[str, np.ndarray]
    """The reply's updates keyed ``part:param`` (its slice shapes), each coordinate clipped to
    ``clip`` times the others' typical size there (as sent when ``clip`` is 0)."""


def _sample(full: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Evenly spaced flat positions of at most :data:`SAMPLE` of a part's coordinates (None: all):
    the cosines and sizes are estimated there, so the screen's cost stays bounded for any network."""
    total = sum(t.size for t in full.values())
    return np.linspace(0, total - 1, SAMPLE).astype(np.int64) if total > SAMPLE else None


def _relative(size: Sequence[Mapping[str, float]], ratios: Sequence[float],
              accepted: np.ndarray) -> list[dict[str, float]]:
    """Each reply's size per part over the median size of the other accepted replies at its ratio
    (a reply is never in its own reference; a reply alone at its ratio gets none)."""
    out: list[dict[str, float]] = []
    for i, own in enumerate(size):
        out.append({})
        for part, value in own.items():
            peers = [other[part] for j, other in enumerate(size)
                     if j != i and accepted[j] and ratios[j] == ratios[i] and part in other]
            if peers:
                out[i][part] = value / (float(np.median(peers)) or 1e-300)
    return out


@dataclass
class AgreementScreen:
    """Refuses the replies that disagree with the others on the coordinates they share.

    Args:
        min_agreement: a reply is refused when its node's mean agreement is at most this, or its
            fast average at most ``FAST_FACTOR`` times this (-1 turns the direction test off).
        max_size: a reply whose update is more than this many times the others' typical size on the
            same coordinates, in any part, is refused (0 turns the size test off).
        clip: each coordinate of an accepted update is clipped to this many times the others' typical
            size there: the smaller of the leave-one-out medians of the absolute updates over all the
            others and over the others at its ratio (0 turns clipping off).
    """

    min_agreement: float = 0.0
    max_size: float = 0.0
    clip: float = 0.0
    record: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    """Client key -> its node's agreement record: (mean, rounds judged, fast average) of its mean
    cosine over parts (the server's history; checkpointed with the strategy)."""

    def __call__(self, replies: Sequence[Sliced], reference: Mapping[str, Mapping[str, np.ndarray]],
                 ratios: Sequence[float], nodes: Sequence[int]) -> list[Verdict]:
        """One verdict per reply: ``replies[i]`` (its updates and slices) from the node whose record
        is kept under ``nodes[i]`` (its client key: the partition id, which survives a resume),
        trained at ``ratios[i]``; ``reference``: the global tensors by reply part (full shapes)."""
        parts = sorted({key.split(":", 1)[0] for reply in replies for key in reply.updates})
        stacks = {part: stack for part in parts
                  if (stack := stack_part(replies, part, reference[part], MIN_PEERS,
                                          _sample(reference[part]))) is not None}
        everyone = np.ones(len(replies), dtype=bool)
        first = self._judge(stacks, everyone, ratios, cross_ratio=True)
        judging = len(replies) >= MIN_REPLIES
        accepted = np.array([not (judging and self._refuses(self._record(node, a)))
                             for node, a in zip(nodes, first[0], strict=True)])
        if accepted.sum() <= MIN_PEERS:  # too few to make a reference of: judge against everyone
            accepted = everyone
        agreement, size, judged = self._judge(stacks, accepted, ratios, cross_ratio=False)
        size = _relative(size, ratios, accepted)
        clipped = [dict(reply.updates) for reply in replies]
        if self.clip > 0:
            for part in stacks:  # every coordinate, at full size
                stack = stack_part(replies, part, reference[part], MIN_PEERS)
                assert stack is not None
                typical = typical_size(stack, accepted, ratios)
                bound = np.where(np.isnan(typical), np.inf, self.clip * typical)
                for i, row in enumerate(stack):
                    unstack_row(np.clip(row, -bound[i], bound[i]), replies[i], part, reference[part],
                                clipped[i])
        verdicts = []
        for i, node in enumerate(nodes):
            record = self._record(node, agreement[i])
            if record is not None:
                self.record[node] = record
            verdicts.append(Verdict(agreement[i], size[i], judged[i],
                                    self._reason(record if judging else None, agreement[i], size[i]),
                                    clipped[i]))
        return verdicts

    def _judge(self, stacks: Mapping[str, np.ndarray], inside: np.ndarray, ratios: Sequence[float],
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
                references.append(leave_group_out(stack, ratios))
            typical = typical_size(stack, inside, ratios)
            for i, row in enumerate(stack):
                cosines = []
                for ref, count in references:
                    mask = covered[i] & (count[i] >= MIN_PEERS)
                    if mask.any():
                        own, toward = row[mask], ref[i][mask]
                        scale = float(np.linalg.norm(own) * np.linalg.norm(toward))
                        cosines.append(float(own @ toward) / (scale or 1.0))
                mask = covered[i] & (peers[i] >= MIN_PEERS)
                if not cosines or not mask.any():
                    continue
                judged[i] += int(mask.sum())
                agreement[i][part] = min(cosines)
                typical_norm = float(np.linalg.norm(typical[i][mask]))
                size[i][part] = float(np.linalg.norm(row[mask])) / (typical_norm or 1e-300)
        return agreement, size, judged

    def _record(self, node: int, agreement: Mapping[str, float]) -> tuple[float, float, float] | None:
        """The node's record if this round's ``agreement`` were added to it (None: never judged)."""
        if not agreement:
            return self.record.get(node)
        now = float(np.mean(list(agreement.values())))
        mean, rounds, fast = self.record.get(node, (0.0, 0.0, 0.0))  # the prior: neutral rounds
        return ((mean * (rounds + PRIOR_ROUNDS) + now) / (rounds + PRIOR_ROUNDS + 1), rounds + 1,
                FAST_MEMORY * fast + (1 - FAST_MEMORY) * now)

    def _refuses(self, record: tuple[float, float, float] | None) -> bool:
        return (record is not None and self.min_agreement > -1
                and not (record[0] > self.min_agreement and record[2] > FAST_FACTOR * self.min_agreement))

    def filter(self, replies: Sequence[ParsedReply],
               reference: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[dict[int, str], int]:
        """Screen the round's ``replies`` (each node's record kept under the client key it was
        sent with): {node: why refused}, and the number of replies that could not be judged. The
        accepted replies' ``values`` are clipped in place (``clip``)."""
        verdicts = self([Sliced(updates_of(r.values, r.index, reference), r.index) for r in replies],
                        reference, [r.sent.ratio for r in replies], [r.sent.client_key for r in replies])
        refused, unjudged = {}, 0
        for reply, verdict in zip(replies, verdicts, strict=True):
            unjudged += verdict.judged == 0
            if verdict.refused:
                refused[reply.node] = verdict.refused
            elif self.clip > 0:
                for key, update in verdict.clipped.items():
                    part, name = key.split(":", 1)
                    base = 0.0 if part == "h" else reply.index[key].take(reference[part][name])
                    reply.values[key] = (update + base).astype(reply.values[key].dtype)
        return refused, unjudged

    def _reason(self, record: tuple[float, float, float] | None, agreement: Mapping[str, float],
                size: Mapping[str, float]) -> str | None:
        if self._refuses(record):
            parts = ", ".join(f"{p} {c:.2f}" for p, c in sorted(agreement.items()))
            assert record is not None
            return (f"the node's updates disagree with the other replies: its mean agreement is "
                    f"{record[0]:.3g} over {record[1]:g} rounds, its fast average {record[2]:.3g} "
                    f"(this round's cosines with the "
                    f"accepted others' median: {parts}); min-agreement={self.min_agreement:g}")
        for part, ratio in sorted(size.items()):
            if self.max_size > 0 and not ratio <= self.max_size:
                return (f"part '{part}' update is {ratio:.3g}x the size of the other replies at its ratio "
                        f"(each measured against the typical update on its own coordinates), above "
                        f"max-update-norm-ratio={self.max_size:g}")
        return None
