"""A round's train replies through their checks: the one loop, for the built-in strategy and
wrapped plug-ins alike.

:func:`take_replies` applies a strategy's ``check`` (it raises on a bad reply, else returns what it
made of it) to the first reply of each node that was sent a train message. A reply fails, and
counts once in the round's ``failed-replies``, when its node was not sent a train message, when it
is a node's second reply (the first one stands), or when ``check`` raises anything; a node that was
sent a message and did not reply before the round closed counts once too. A strategy may refuse
a reply that passed (the agreement screen: :meth:`Intake.refuse`). :meth:`Intake.log` logs every
failure with its node and reason (a client's text cut and escaped), in node order.

Example:
    >>> from flwr.app import Message, RecordDict
    >>> from rabo_protocol.flwr_compat import TaskIdentity
    >>> TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # outside an app
    >>> def reply(node: int) -> Message:
    ...     return Message(RecordDict(), reply_to=Message(RecordDict(), dst_node_id=node,
    ...                                                   message_type="train"))
    >>> def check(msg: Message) -> int:
    ...     if msg.metadata.src_node_id == 3:
    ...         raise ValueError("bad")
    ...     return msg.metadata.src_node_id
    >>> intake = take_replies([reply(1), reply(3), reply(1), reply(9)], check, sent_to={1, 3, 4})
    >>> intake.passed, [(f.node, f.reason) for f in intake.failures]  # doctest: +NORMALIZE_WHITESPACE
    ({1: 1}, [(3, 'ValueError: bad'), (1, 'a second reply of the node'),
              (9, 'ValueError: not sent a train message this round'),
              (4, 'no reply before the round timeout')])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Generic, TypeVar

from flwr.app import Message
from flwr.common import log

from .claims import client_text

__all__ = ["Failure", "Intake", "take_replies"]

T = TypeVar("T")

REASON_LIMIT = 400
"""Characters of a failure's reason that are logged (a client's text, cut and escaped)."""


@dataclass(frozen=True)
class Failure:
    """A reply that does not count (or a reply that never came), and why."""

    node: int
    reason: str


@dataclass
class Intake(Generic[T]):
    """A round's train replies after their checks."""

    passed: dict[int, T] = field(default_factory=dict)
    """Node -> what the check made of its reply, in the order the replies arrived."""
    failures: list[Failure] = field(default_factory=list)
    """One entry per failed reply (a node's second reply included) and per missing one."""
    unanswered: set[int] = field(default_factory=set)
    """The nodes sent a train message that did not reply."""

    def refuse(self, node: int, reason: str) -> None:
        """The reply of ``node``, which passed the check, does not count after all."""
        del self.passed[node]
        self.failures.append(Failure(node, reason))

    @property
    def failed(self) -> int:
        """The round's ``failed-replies``."""
        return len(self.failures)

    def log(self, server_round: int) -> None:
        """Log each failure, in node order."""
        for failure in sorted(self.failures, key=lambda f: f.node):
            log(WARNING, "round %d: reply of node %d skipped: %s", server_round, failure.node, failure.reason)


def take_replies(replies: Iterable[Message], check: Callable[[Message], T],
                 sent_to: Collection[int]) -> Intake[T]:
    """The ``replies`` of a round whose train messages went to the nodes ``sent_to``, each node's
    first reply through ``check`` (see the module's docstring for what fails)."""
    intake: Intake[T] = Intake()
    replied: set[int] = set()
    for msg in replies:
        node = msg.metadata.src_node_id
        if node in replied:
            intake.failures.append(Failure(node, "a second reply of the node"))
            continue
        replied.add(node)
        try:
            if node not in sent_to:
                raise ValueError("not sent a train message this round")
            intake.passed[node] = check(msg)
        except Exception as err:  # noqa: BLE001 - whatever a malformed reply raises is its failure
            intake.failures.append(Failure(node, client_text(f"{type(err).__name__}: {err}", REASON_LIMIT)))
    intake.unanswered = set(sent_to) - replied
    intake.failures.extend(Failure(node, "no reply before the round timeout")
                           for node in sorted(intake.unanswered))
    return intake
