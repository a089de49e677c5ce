"""The agreement screen: each reply judged against the other replies (and the server's own update),
on the coordinates it shares.

A reply's update (returned minus sent; a hypergradient h as it is) is compared, coordinate by
coordinate, with a reference that it is never part of: the median of the other replies' updates,
on the coordinates that at least :data:`MIN_PEERS` of them covered (its *judged* coordinates).
Its *agreement* is the cosine between its update and that reference there, averaged over the
parts (x or h, y, v). With ``reference`` 'server' or 'both' (``screen-reference``), a reply is also
(or only) compared with the server's own update on its root set (server_app/reference.py), on every
coordinate the reply covers: a reference no client sets. Each node keeps a *record* per reference
(rabo_strategy/records.py: a mean over the rounds with neutral rounds in front, and a fast
average; the server's history, checkpointed); a reply is refused when any of its records falls to
``min_agreement`` (its fast average to :data:`~rabo_strategy.records.FAST_FACTOR` times that).

Colluders that are the majority of a coordinate's other clients set its median. Two passes keep
them out of the final reference: the first judges each reply by the smaller of its agreement with
the leave-one-out median of all the others and with the median of the replies at **other ratios**
(a group at one ratio never sits in its own reference); the second, and the last, judges every
reply against the median of the replies the first pass accepted (a reply again never its own).
The server's update is the same in both passes; it decides who forms the others' reference too.

Accepted updates are clipped per coordinate to ``clip`` times the typical size of the accepted
others there (:func:`~rabo_strategy.medians.typical_size`), so an update that passes the direction
test moves the average little more than an honest one. ``max_size`` (0: off) refuses an update
whose norm on its judged coordinates exceeds that many times the others' typical size there.

What it cannot see: a coordinate that fewer than :data:`MIN_PEERS` + 1 replies cover is protected
only through the judgement of the rest of its replies' coordinates (``unprotected-fraction`` in
the round metrics) or the server's update; a reply with no judged coordinate is accepted unjudged
(``unscreened-replies``), and in a round of fewer than :data:`MIN_REPLIES` replies no reply is
refused for its direction against the others (against the server's update it is).

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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .agreement import MIN_PEERS, against_peers, against_server
from .ahead import ServerUpdate, UpdateAhead
from .medians import (
    Sliced,
    relative_sizes,
    sample_positions,
    stack_part,
    typical_size,
    unstack_row,
    updates_of,
)
from .records import Record, refusal, refuses, updated
from .replies import ParsedReply

__all__ = ["MIN_PEERS", "AgreementScreen", "Sliced", "Verdict"]

MIN_REPLIES = 6
"""Replies a round needs for the direction test to refuse any: with fewer, one honest client's
noise is as large as the signal (a 4-client MobileNet round's honest reply measured -0.33), and a
median of 5 others still tolerates 2 colluders."""


Parts = Mapping[str, Mapping[str, np.ndarray]]
SOURCES = {"peers": ("peers",), "server": ("server",), "both": ("peers", "server")}
"""``screen-reference`` -> the references a node keeps a record against."""


@dataclass(frozen=True)
class Verdict:
    """One reply's screen: per part its agreement with the others and its size (a part absent where
    it was not judged), the number of judged coordinates, and why it is refused (None: accepted)."""

    agreement: Mapping[str, float]
    size: Mapping[str, float]
    judged: int
    refused: str | None
    clipped: dict[str, np.ndarray]
    """The reply's updates keyed ``part:param`` (its slice shapes), each coordinate clipped to
    ``clip`` times the others' typical size there (as sent when ``clip`` is 0)."""


@dataclass
class AgreementScreen:
    """Refuses the replies that disagree with the others, or with the server's own update, on the
    coordinates they share.

    Args:
        min_agreement: a reply is refused when one of its node's records (mean agreement) is at
            most this, or its fast average at most ``FAST_FACTOR`` times this (-1: no direction test).
        max_size: a reply whose update is more than this many times the others' typical size on the
            same coordinates, in any part, is refused (0 turns the size test off).
        clip: each coordinate of an accepted update is clipped to this many times the others' typical
            size there: the smaller of the leave-one-out medians of the absolute updates over all the
            others and over the others at its ratio (0 turns clipping off).
        reference: ``screen-reference``: what a reply's direction is judged against: the other
            replies ('peers'), the server's update ('server'), or each with its own record ('both').
        server_update: the server's own update for a round (server_app/reference.py), which
            :meth:`filter` asks for when ``reference`` is 'server' or 'both' (:meth:`prepare`
            starts it while the nodes train).
    """

    min_agreement: float = 0.0
    max_size: float = 0.0
    clip: float = 0.0
    reference: str = "peers"
    server_update: ServerUpdate | None = None
    record: dict[int, Record] = field(default_factory=dict)
    """Client key -> its node's record against the other replies (checkpointed with the strategy)."""
    server_record: dict[int, Record] = field(default_factory=dict)
    """Client key -> its node's record against the server's update (checkpointed)."""

    def __call__(self, replies: Sequence[Sliced], reference: Parts, ratios: Sequence[float],
                 nodes: Sequence[int], server: Parts | None = None) -> list[Verdict]:
        """One verdict per reply: ``replies[i]`` (its updates and slices) from the node whose records
        are kept under ``nodes[i]`` (its client key: the partition id, which survives a resume),
        trained at ``ratios[i]``; ``reference``: the global tensors by reply part (full shapes);
        ``server``: the server's own update by part (full shapes), given exactly when ``reference``
        is 'server' or 'both' and the direction test is on (``min_agreement`` > -1)."""
        sources = SOURCES[self.reference]
        if not replies:
            return []
        if self.min_agreement > -1 and (server is not None) != ("server" in sources):
            raise ValueError(f"screen reference '{self.reference}' with{'out' if server is None else ''} "
                             "the server's update")
        parts = sorted({key.split(":", 1)[0] for reply in replies for key in reply.updates})
        stacks, rows = {}, {}
        for part in parts:
            positions = sample_positions(reference[part])
            if (stack := stack_part(replies, part, reference[part], MIN_PEERS, positions)) is not None:
                stacks[part] = stack
                if server is not None and part in server:
                    flat = np.concatenate([np.ravel(server[part][name]) for name in reference[part]])
                    rows[part] = flat if positions is None else flat[positions]
        theirs, counted = against_server(stacks, rows, len(replies))
        low, everyone = self.min_agreement, np.ones(len(replies), dtype=bool)
        # who may sit in the others' reference: first the server's verdict (no client sets it), then
        # the first pass against the others (their median, and the other ratios')
        trusted = np.array([not ("server" in sources and refuses(self._record(
            self.server_record, node, theirs[i]), low)) for i, node in enumerate(nodes)], dtype=bool)
        base = trusted if trusted.sum() > MIN_PEERS else everyone
        first = against_peers(stacks, base, ratios, cross_ratio=True)[0]
        peers_judge = len(replies) >= MIN_REPLIES and "peers" in sources
        accepted = base & np.array([not (peers_judge and refuses(
            self._record(self.record, node, first[i]), low)) for i, node in enumerate(nodes)], dtype=bool)
        if accepted.sum() <= MIN_PEERS:  # too few to make a reference of: judge against everyone
            accepted = base
        agreement, size, judged = against_peers(stacks, accepted, ratios, cross_ratio=False)
        size = relative_sizes(size, ratios, accepted)
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
            records = {"peers": self._record(self.record, node, agreement[i] if "peers" in sources else {}),
                       "server": self._record(self.server_record, node, theirs[i])}
            for book, source in ((self.record, "peers"), (self.server_record, "server")):
                if records[source] is not None:
                    book[node] = records[source]  # type: ignore[assignment]
            if not peers_judge:
                records["peers"] = None
            why = refusal(self.min_agreement, self.max_size, records, agreement[i], theirs[i], size[i])
            verdicts.append(Verdict(agreement[i], size[i], judged[i] or counted[i], why, clipped[i]))
        return verdicts

    @staticmethod
    def _record(book: Mapping[int, Record], node: int, agreement: Mapping[str, float]) -> Record | None:
        """The node's record in ``book`` if this round's ``agreement`` were added (None: never judged)."""
        if not agreement:
            return book.get(node)
        return updated(book.get(node), float(np.mean(list(agreement.values()))))

    def __post_init__(self) -> None:
        self._ahead = UpdateAhead(self.server_update) if self.server_update else None
        if self.reference != "peers" and self._ahead is None:
            raise ValueError(f"screen reference '{self.reference}' needs the server's update (server_update)")

    def prepare(self, sent: Parts, server_round: int) -> None:
        """Start the server's update to the global ``sent`` for :meth:`filter` while the nodes train."""
        if self._ahead and self.min_agreement > -1 and "server" in SOURCES[self.reference]:
            self._ahead.start(sent, server_round)

    def filter(self, replies: Sequence[ParsedReply], reference: Parts, sent: Parts,
               server_round: int) -> tuple[dict[int, str], int, dict[str, float]]:
        """Screen the round's ``replies`` to the global ``sent`` (x, y, v; records kept under the client
        key each was sent with): {node: why refused}, the number of replies not judged, and the metrics
        (``reference-seconds``: the server's update's cost; ``reference-wait-seconds``: the wait for it).
        The accepted replies' ``values`` are clipped in place (``clip``)."""
        server, metrics, start = None, {}, time.perf_counter()
        if "server" in SOURCES[self.reference] and replies and self.min_agreement > -1:
            assert self._ahead is not None
            server = self._ahead(sent, server_round)
            waited = time.perf_counter() - start
            metrics = {"reference-seconds": self._ahead.seconds, "reference-wait-seconds": waited}
        verdicts = self([Sliced(updates_of(r.values, r.index, reference), r.index) for r in replies],
                        reference, [r.sent.ratio for r in replies], [r.sent.client_key for r in replies],
                        server)
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
        return refused, unjudged, metrics

    def state(self) -> dict[str, dict[int, list[float]]]:
        """The nodes' records, as a checkpoint keeps them (``load_state`` reads them back)."""
        return {key: {node: list(record) for node, record in book.items()} for key, book in self._books()}

    def load_state(self, state: Mapping[str, object]) -> None:
        for key, book in self._books():
            saved: Mapping = state.get(key, {})  # type: ignore[assignment]
            book.clear()
            book.update({int(k): (float(v[0]), float(v[1]), float(v[2])) for k, v in saved.items()})

    def _books(self) -> tuple[tuple[str, dict[int, Record]], ...]:
        return ("agreement-record", self.record), ("server-agreement-record", self.server_record)

