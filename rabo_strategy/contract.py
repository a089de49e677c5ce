"""What the server needs from a strategy, named: the seam between ``server_app`` and a strategy.

The server runs a Flower ``Strategy``'s round methods and, beyond Flower's ABC, reads what it
records and checkpoints: the node profiles (``summary.json``), the ratio each accepted reply
trained at (``clients.csv``), the nodes' own evaluation rows, and the strategy's state (a
checkpoint, and a resume). :class:`ServerFacing` names all of it, so the server never probes a
strategy for an attribute. The built-in :class:`~rabo_strategy.ResourceAdaptiveBilevel`
satisfies it; a plug-in Flower strategy is wrapped (``server_app.validation.ValidatedReplies``)
by an object that does, with explicit defaults (no profiles of its own kind, no evaluation rows,
the plug-in's state only when the plug-in is :class:`Stateful`).

Example:
    >>> class Empty:
    ...     def state(self) -> dict[str, object]:
    ...         return {}
    ...     def load_state(self, state: dict[str, object]) -> None:
    ...         pass
    >>> isinstance(Empty(), Stateful), isinstance(Empty(), ServerFacing)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from .profiles import NodeProfile

__all__ = ["Row", "ServerFacing", "Stateful"]

Row = Mapping[str, float | int]
"""One row of a results table (column -> number)."""


@runtime_checkable
class Stateful(Protocol):
    """A strategy whose own state a checkpoint keeps: ``load_state(state())`` on a fresh strategy
    resumes it exactly (the state is torch-saveable: numbers, strings, arrays, lists, dicts)."""

    def state(self) -> dict[str, object]: ...

    def load_state(self, state: dict[str, object]) -> None:
        """Raise (any exception) for a state this strategy cannot resume from."""
        ...


@runtime_checkable
class ServerFacing(Stateful, Protocol):
    """A strategy as ``server_app`` runs it: Flower's round methods (as ``Strategy`` declares
    them) and what the server records of it."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]: ...

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]: ...

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]: ...

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None: ...

    @property
    def profiles(self) -> Mapping[int, NodeProfile]:
        """Node -> its admitted profile (``summary.json``'s nodes)."""
        ...

    @property
    def accepted_ratios(self) -> Mapping[int, float]:
        """Node -> the ratio it trained at, for the replies the last ``aggregate_train`` accepted
        (``clients.csv`` has a row for each of them only)."""
        ...

    @property
    def node_eval_rows(self) -> Sequence[Row]:
        """The nodes' own evaluations so far, one row per node and evaluated round."""
        ...
