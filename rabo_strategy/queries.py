"""Node profiles asked for without holding up the rounds.

A round needs the profile of each node it trains (its ratio, partition and examples), which the
node sends in reply to a query. :class:`ProfileQueries` sends the queries, waits ``wait`` seconds
for their answers (the run's ``query-wait``), and keeps the ones not answered by then pending: an
answer that arrives later is taken at the next round's start, and its node trains from that round
on; it is not asked again meanwhile. A query unanswered after ``timeout`` seconds is dropped and
its node asked again when next sampled, as is a node whose answer is an error or invalid.

On the throttled deployment of docs/results.md section 10 the six faster nodes answered within
6 to 10 s and the four slowest within 17 to 21 s; waiting for all of them held round 1, and so
every later round, back: with the wait at the deadline (14.7 s) round 1 started 15.3 to 16.5 s
into a run, against 19.2 to 30.0 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING

from flwr.app import ConfigRecord, ConfigRecordValues, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from rabo_protocol.wire import CONFIG, PROFILE

from .claims import client_text
from .profiles import NodeProfile, resolve_profile

__all__ = ["POLL_SECONDS", "ProfileQueries", "query_profiles"]

POLL_SECONDS = 0.1
"""How often :meth:`ProfileQueries.answers` asks the grid for answers while it waits."""


class ProfileQueries:
    """The profile queries in flight.

    Args:
        config: sent with every query (the strategy's ``client_config``).
        levels: the run's ``ratio-levels`` (a profile without a ratio gets one of them).
        wait: seconds after its query that a round waits for a node's answer (None: ``timeout``).
        timeout: seconds after which an unanswered query is dropped.
    """

    def __init__(self, config: Mapping[str, ConfigRecordValues], levels: Sequence[float],
                 wait: float | None, timeout: float) -> None:
        self.config, self.levels, self.timeout = dict(config), tuple(levels), timeout
        self.wait = timeout if wait is None else min(wait, timeout)
        self._pending: dict[str, tuple[int, float]] = {}  # message id -> (node, sent at: time.time())

    @property
    def pending(self) -> set[int]:
        """The nodes asked and not answered yet."""
        return {node for node, _ in self._pending.values()}

    def ask(self, grid: Grid, nodes: Iterable[int], server_round: int) -> None:
        """Send a query to each of ``nodes`` that has none pending."""
        asked, config = self.pending, {**self.config, "server-round": server_round}
        queries = [Message(content=RecordDict({CONFIG: ConfigRecord(config)}), dst_node_id=n,
                           message_type=MessageType.QUERY, group_id=f"profile-{server_round}")
                   for n in dict.fromkeys(nodes) if n not in asked]
        if not queries:
            return
        sent = time.time()
        for message_id, query in zip(grid.push_messages(queries), queries, strict=True):
            if message_id:
                self._pending[message_id] = (query.metadata.dst_node_id, sent)

    def answers(self, grid: Grid) -> dict[int, NodeProfile]:
        """The valid profiles answered so far; waits until every pending query is answered or has
        waited ``wait`` seconds since it was sent. A node whose answer is an error or invalid is
        logged and left out."""
        profiles: dict[int, NodeProfile] = {}
        end = max((sent + self.wait for _, sent in self._pending.values()), default=0.0)
        while self._pending:
            for reply in grid.pull_messages(list(self._pending)):
                node, sent = self._pending.pop(reply.metadata.reply_to_message_id, (None, 0.0))
                if node is None:
                    continue
                try:
                    if reply.has_error():
                        raise ValueError(reply.error.reason)
                    profiles[node] = resolve_profile(node, reply.content[PROFILE], self.levels)
                except (KeyError, ValueError, TypeError) as err:
                    log(WARNING, "node %d left out: its profile is invalid: %s", node, client_text(err))
                    continue
                log(INFO, "node %d answered its query %.1f s after it was sent (its clock), taken after "
                    "%.1f s", node, reply.metadata.created_at - sent, time.time() - sent)
            if not self._pending or time.time() >= end:
                break
            time.sleep(min(POLL_SECONDS, max(0.0, end - time.time())))
        self._drop_expired()
        return profiles

    def _drop_expired(self) -> None:
        now = time.time()
        for message_id, (node, sent) in list(self._pending.items()):
            if now - sent >= self.timeout:
                del self._pending[message_id]
                log(WARNING, "node %d did not answer its query within %g s: asked again when next sampled",
                    node, self.timeout)
        if self._pending:
            log(INFO, "nodes %s have not answered their query after %g s: they join the round after "
                "their answer arrives", sorted(self.pending), self.wait)


def query_profiles(grid: Grid, nodes: Iterable[int], config: Mapping[str, ConfigRecordValues],
                   levels: Sequence[float], server_round: int, timeout: float) -> dict[int, NodeProfile]:
    """Ask ``nodes`` for their profile and wait for every answer, up to ``timeout`` seconds; a node
    that does not answer, reports an error or sends an invalid profile is logged and left out."""
    queries = ProfileQueries(config, levels, wait=None, timeout=timeout)
    queries.ask(grid, nodes, server_round)
    return queries.answers(grid)
