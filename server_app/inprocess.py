"""A Grid that runs a ClientApp in this process: rounds in milliseconds, for tests and debugging.

Each node gets its own ``Context`` (node config ``partition-id`` / ``num-partitions`` unless
``partitioned`` is false, plus any extra per-node keys) whose ``state`` persists across rounds,
as on a real SuperNode. A ClientApp exception becomes an error reply, as the Flower runtime
does; a node whose ClientApp takes longer than the round timeout is treated as a straggler whose
reply never arrives.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from flwr.app import Context, Error, Message, RecordDict, UserConfig, UserConfigValue
from flwr.serverapp import Grid

from rabo_protocol.flwr_compat import Run, TaskIdentity

ClientCallable = Callable[[Message, Context], Message]

CLIENT_APP_ERROR = 2  # the code Flower's runtime uses for an exception raised by the ClientApp


class InProcessGrid(Grid):
    synchronous = True
    """Nodes run while messages are delivered (``MeteredGrid`` keeps this grid's ``send_and_receive``)."""

    def __init__(
        self, client_app: ClientCallable, num_nodes: int, run_config: UserConfig,
        node_configs: Sequence[Mapping[str, UserConfigValue]] | None = None, run_id: int = 1,
        partitioned: bool = True,
    ) -> None:
        extra = list(node_configs) if node_configs is not None else [{}] * num_nodes
        if len(extra) != num_nodes:
            raise ValueError("node_configs must have one entry per node")
        self.client_app = client_app
        self.contexts = {
            1000 + i: Context(run_id=run_id, node_id=1000 + i,
                              node_config={**({"partition-id": i, "num-partitions": num_nodes}
                                               if partitioned else {}), **extra[i]},
                              state=RecordDict(), run_config=dict(run_config))
            for i in range(num_nodes)
        }
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}
        # Messages built outside a running app need the identity of the sending task.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _handle(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            return self.client_app(message, context)
        except Exception:  # noqa: BLE001 - reported to the server as an error reply, like Flower
            return Message(Error(CLIENT_APP_ERROR, traceback.format_exc()), reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            reply, _ = self._deliver(message)
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Replies of the nodes whose ClientApp returned within ``timeout`` seconds each; a later
        reply is a late reply, left for ``pull_messages``, as on a SuperLink."""
        replies = []
        for message in messages:
            reply, seconds = self._deliver(message)
            if timeout is None or seconds <= timeout:
                replies.append(reply)
            else:
                self._replies[message.metadata.message_id] = reply
        return replies

    def _deliver(self, message: Message) -> tuple[Message, float]:
        """Deliver one message: (the ClientApp's reply, the seconds the call took).

        Every message of :meth:`push_messages` and :meth:`send_and_receive` passes through here
        once, in order: the hook for a subclass that observes deliveries (e.g. times them), which
        overrides it and calls ``super()._deliver(message)``.
        """
        # What the SuperLink does on arrival (Metadata.message_id has no public setter).
        message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        start = time.perf_counter()
        reply = self._handle(message)
        return reply, time.perf_counter() - start
