"""Communication measured the same way for every strategy: bytes of the serialized messages.

:class:`MeteredGrid` wraps any Flower ``Grid`` and counts, for each message the server sends and
each reply it receives, the size of its protobuf serialization (``message_to_proto``), the wire
format of the SuperLink. Built-in and plug-in strategies, train and query messages alike go through
it, so bytes per round are comparable across methods.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run


def message_bytes(message: Message) -> int:
    """Size in bytes of the message's protobuf serialization (content or error, and metadata)."""
    return int(message_to_proto(message).ByteSize())


class MeteredGrid(Grid):
    """A Grid that forwards to ``grid`` and counts serialized bytes per node.

    ``take()`` returns and resets the counts since the previous call: {node id: (down, up)},
    where down = bytes sent to the node and up = bytes received from it.
    """

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._down: dict[int, int] = defaultdict(int)
        self._up: dict[int, int] = defaultdict(int)

    def take(self) -> dict[int, tuple[int, int]]:
        counts = {n: (self._down.get(n, 0), self._up.get(n, 0)) for n in set(self._down) | set(self._up)}
        self._down.clear()
        self._up.clear()
        return counts

    def _sent(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for message in messages:
            self._down[message.metadata.dst_node_id] += message_bytes(message)
        return messages

    def _received(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        for reply in replies:
            self._up[reply.metadata.src_node_id] += message_bytes(reply)
        return replies

    # ------------------------------------------------------------------------ Grid, forwarded
    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(self._sent(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._received(self.grid.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self._received(self.grid.send_and_receive(self._sent(messages), timeout=timeout))
