"""Communication measured the same way for every strategy: bytes of the serialized messages.

:class:`MeteredGrid` wraps any Flower ``Grid`` and counts, for each message the server sends and
each reply it receives, the size of its protobuf serialization (``message_to_proto``), the wire
format of the SuperLink. Built-in and plug-in strategies, train and query messages alike go through
it, so bytes per round are comparable across methods.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from logging import WARNING

from flwr.app import Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from rabo_protocol.flwr_compat import Run
from rabo_protocol.wire import message_bytes

__all__ = ["POLL_SECONDS", "MeteredGrid", "message_bytes"]

SizedReply = tuple[Message, int]  # a reply and its serialized bytes

POLL_SECONDS = 0.1
"""How often :meth:`MeteredGrid.send_and_receive` asks the SuperLink for replies."""
REPULL_SECONDS = 0.25
"""How long after an empty pull :meth:`MeteredGrid.send_and_receive` asks again for the same reply
(one pull per message: ten nodes cost the SuperLink at most 40 pulls a second)."""

RETURN_SECONDS = 0.02
"""What :meth:`MeteredGrid.send_and_receive` keeps of its timeout to return the replies it has
(the throttled deployment's rounds had closed 1 to 4 ms past deadline plus grace without it)."""


class MeteredGrid(Grid):
    """A Grid that forwards to ``grid``, counts serialized bytes per node and counts late replies.

    ``take()`` returns and resets the counts since the previous call: {node id: (down, up)},
    where down = bytes sent to the node and up = bytes received from it.

    ``send_and_receive`` pushes the messages and pulls each reply on its own until all arrived or
    ``timeout`` passed (Flower's own polls every 3 s, so a round would close up to 3 s after its
    deadline). Each pull runs in a thread that the call stops waiting for at the timeout: Flower's
    grid lists a reply once the node pushed its message, then pulls the reply's arrays with
    retries 1, 2, 4 ... s apart while the node is still uploading them, which closed rounds of
    throttled nodes up to 2.3 s late; a pull of several replies then held every one of them until
    the slowest upload ended, and cut off at the close, lost replies that had arrived in time. A
    reply that arrives after its call returned (or whose pull was cut off) is a late reply: a later
    call collects it in the background, logs it and drops it (it is never returned, so never
    applied to a later round); ``take_late()`` returns and resets the count of those collected so
    far. A grid that runs its nodes during ``push_messages`` (``synchronous = True``:
    :class:`~server_app.inprocess.InProcessGrid`) keeps its own ``send_and_receive``.
    """

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._down: dict[int, int] = defaultdict(int)
        self._up: dict[int, int] = defaultdict(int)
        self._outstanding: set[str] = set()
        self._cut: list[Future[list[SizedReply]]] = []  # pulls still running when their round closed
        self._late = 0

    def take_late(self) -> int:
        """Late replies dropped since the previous call."""
        self._drop_late()
        late, self._late = self._late, 0
        return late

    def _drop_late(self) -> None:
        if self._outstanding and not self._cut:  # in the background: it may wait for an upload too
            self._cut.append(pull_in_thread(self.grid, self._outstanding))
            wait(self._cut, timeout=POLL_SECONDS)
        pulled: list[Message] = []
        for cut in [cut for cut in self._cut if cut.done()]:
            self._cut.remove(cut)
            if (err := cut.exception()) is not None:
                log(WARNING, "a pull cut off at its round's close failed: %r", err)
            else:
                pulled += [reply for reply, _ in cut.result()]
        self._outstanding -= {r.metadata.reply_to_message_id for r in pulled}
        late = [r for r in pulled if not r.has_error()]  # not the SuperLink's "expired" notices
        if late:
            self._late += len(late)
            log(WARNING, "%d late replies (from nodes %s) arrived after their round closed: dropped",
                len(late), sorted(r.metadata.src_node_id for r in late))

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
        # from the call, less the time to hand the replies back: the call returns within its timeout
        end = time.monotonic() + (timeout - RETURN_SECONDS if timeout is not None else float("inf"))
        self._drop_late()
        messages = self._sent(messages)
        replies: list[SizedReply] = []
        if getattr(self.grid, "synchronous", False):
            replies = [(r, message_bytes(r)) for r in self.grid.send_and_receive(messages, timeout=timeout)]
            waiting = {m.metadata.message_id for m in messages}
        else:
            waiting = {i for i in self.grid.push_messages(messages) if i}
            replies = self._poll(waiting, end)
        self._outstanding |= waiting - {r.metadata.reply_to_message_id for r, _ in replies}
        for reply, size in replies:
            self._up[reply.metadata.src_node_id] += size
        return [reply for reply, _ in replies]

    def _poll(self, waiting: set[str], end: float) -> list[SizedReply]:
        """The replies to ``waiting`` that arrive by ``end``: one pull per message, so that a reply
        whose arrays are still uploading (Flower's grid retries 1, 2, 4 s apart) holds up only
        itself; a message's next pull starts :data:`REPULL_SECONDS` after its last came back empty.
        Pulls still running at ``end`` are cut off: their replies are late."""
        replies: list[SizedReply] = []
        running: dict[str, Future[list[SizedReply]]] = {}
        due = dict.fromkeys(waiting, 0.0)  # message id -> when to pull it next
        while due or running:
            now = time.monotonic()
            for i in [i for i, at in due.items() if at <= now]:
                running[i] = pull_in_thread(self.grid, [i])
                del due[i]
            pause = max(0.0, min(POLL_SECONDS, end - now, *(at - now for at in due.values())))
            if running:
                wait(list(running.values()), timeout=pause, return_when=FIRST_COMPLETED)
            else:
                time.sleep(pause)
            for i, pull in [(i, pull) for i, pull in running.items() if pull.done()]:
                del running[i]
                pulled = pull.result()
                replies.extend(pulled)
                if not pulled:
                    due[i] = time.monotonic() + REPULL_SECONDS
            if time.monotonic() >= end:
                self._cut.extend(running.values())
                break
        return replies


def pull_in_thread(grid: Grid, message_ids: Iterable[str]) -> Future[list[SizedReply]]:
    """``grid.pull_messages`` in a daemon thread (one that a stuck pull cannot keep the process
    alive with, as a thread pool's would), each reply with its serialized size, counted there: the
    round's close waits for neither."""
    future: Future[list[SizedReply]] = Future()
    ids = list(message_ids)

    def pull() -> None:
        try:
            future.set_result([(r, message_bytes(r)) for r in grid.pull_messages(ids)])
        except BaseException as err:  # noqa: BLE001 (re-raised by result() in the caller)
            future.set_exception(err)

    threading.Thread(target=pull, name="metered-pull", daemon=True).start()
    return future
