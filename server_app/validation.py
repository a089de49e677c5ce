"""The reply checks of the built-in strategy, for any plug-in Flower Strategy.

A plug-in (``strategy='package.module:ClassName'``) is wrapped in :class:`ValidatedReplies`: its
``aggregate_train`` only sees the train replies that carry a model with the global arrays' keys,
shapes and dtypes, finite values, an update (reply minus the model sent) within
``max-update-norm``, and a finite positive ``num-examples`` no larger than the node's train
examples declared at query time (the checks of :mod:`rabo_strategy.replies`). The others are logged with their
reason and counted in the round's ``failed-replies`` by the loop the built-in strategy uses too
(:func:`rabo_strategy.intake.take_replies`). Without it one NaN reply turns a FedAvg or FedMedian
model into NaN. The wrapper is what the server talks to (:class:`rabo_strategy.contract.ServerFacing`),
with explicit defaults where a plug-in has nothing to say.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from copy import copy as shallow_copy
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, ConfigRecordValues, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from rabo_protocol.wire import CONFIG
from rabo_strategy import NodeProfile, query_profiles
from rabo_strategy.claims import Claimed, accept_metrics, check_examples, clean_metrics, client_text
from rabo_strategy.contract import Row, Stateful
from rabo_strategy.intake import take_replies
from rabo_strategy.node_sampling import wait_for_nodes
from rabo_strategy.profiles import admit_profiles
from rabo_strategy.replies import decode


def check_reply(msg: Message, reference: dict[str, np.ndarray], max_update_norm: float,
                declared: int | None = None, profile: Claimed | None = None) -> None:
    """Raise ValueError saying what is wrong with a plug-in's train reply (``declared``: the
    node's train examples from its profile, the bound of its num-examples; with the node's
    ``profile``, its metrics are also kept as :func:`rabo_strategy.claims.accept_metrics` says)."""
    if msg.has_error():
        raise ValueError(f"client error: {client_text(msg.error.reason)}")
    arrays = list(msg.content.array_records.values())
    metrics = list(msg.content.metric_records.values())
    if len(arrays) != 1 or len(metrics) != 1:
        raise ValueError(f"expected one ArrayRecord and one MetricRecord, got {len(arrays)} and "
                         f"{len(metrics)}")
    if profile is None:
        check_examples(metrics[0], declared)
    else:
        accept_metrics(metrics[0], msg.metadata.src_node_id, profile)
    if set(arrays[0].keys()) != set(reference):
        raise ValueError(f"the reply's arrays {sorted(arrays[0].keys())[:4]}... are not the model's")
    squared = 0.0
    for key, expected in reference.items():
        value = decode(key, arrays[0][key], expected.shape, expected.dtype)
        squared += float(np.sum(np.square(value - expected, dtype=np.float64)))
    if not math.sqrt(squared) <= max_update_norm:
        raise ValueError(f"update norm {math.sqrt(squared):.3g} above "
                         f"max-update-norm={max_update_norm:g}")
    if squared == 0.0 and reference:
        raise ValueError("every array was returned exactly as it was sent (nothing was trained)")


IDENTITY_KEYS = {"partition-id"}
"""Client metrics that identify, not measure: never averaged (a mean partition id is noise)."""


def _consistent(replies: list[Message]) -> list[Message]:
    """Give the accepted replies the uniform content Flower's strategies require (they raise
    InconsistentMessageReplies otherwise): records named ``arrays`` and ``metrics``, and the
    metrics that every reply carries as a finite number (one extra key used to stop the run)."""
    metrics = [next(iter(m.content.metric_records.values())) for m in replies]
    common = set.intersection(*({k for k, v in record.items() if not isinstance(v, (bool, list))
                                 and isinstance(v, (int, float)) and math.isfinite(v)}
                                for record in metrics)) - IDENTITY_KEYS if replies else set()
    out = []
    for msg, record in zip(replies, metrics, strict=True):
        arrays = next(iter(msg.content.array_records.values()))
        copy = shallow_copy(msg)  # the reply itself keeps its metrics for clients.csv
        copy.content = RecordDict({"arrays": arrays,
                                   "metrics": MetricRecord({k: record[k] for k in sorted(common)})})
        out.append(copy)
    return out


class ValidatedReplies(Strategy):
    """``inner`` (any Strategy) aggregating only the train replies that pass :func:`check_reply`.

    Before a node's first train message it is queried for its profile, as the built-in strategy
    does: a node whose data is unusable is left out (its train message is not sent), and the
    train examples it declares bound the num-examples of its replies. Its train and evaluate
    messages carry ``client_config`` (the model's input shape and classes, the input
    standardisation, the full widths) as the built-in strategy's do, so nodes need no special case
    for a plug-in.

    ``min_nodes`` is (key, count): before each round it waits at most ``wait_timeout`` seconds for
    ``count`` connected nodes and then stops the run with a message naming ``key``
    (:func:`rabo_strategy.node_sampling.wait_for_nodes`), where Flower's own sampling waits forever.

    What the server records of it (:class:`~rabo_strategy.contract.ServerFacing`): the profiles
    it queried, ratio 1.0 for each accepted reply, no node evaluation rows of its own (the
    plug-in's evaluation is in its ``aggregate_evaluate`` metrics), and the plug-in's state when the
    plug-in is :class:`~rabo_strategy.contract.Stateful` (else none: a resume restarts it fresh).
    """

    def __init__(self, inner: Strategy, max_update_norm: float,
                 client_config: Mapping[str, ConfigRecordValues] | None = None,
                 query_timeout: float = 120.0, min_nodes: tuple[str, int] = ("min-available-nodes", 0),
                 wait_timeout: float = 600.0) -> None:
        self.inner = inner
        self.min_nodes, self.wait_timeout = min_nodes, wait_timeout
        self.max_update_norm = max_update_norm
        self.client_config = dict(client_config or {})
        self.query_timeout = query_timeout
        self._reference: dict[str, np.ndarray] = {}
        self.profiles: dict[int, NodeProfile] = {}
        self._sent_to: set[int] = set()
        self.accepted_ratios: dict[int, float] = {}
        """Node -> 1.0 (a plug-in's nodes train the full model), for the accepted replies."""

    @property
    def node_eval_rows(self) -> tuple[Row, ...]:
        return ()

    def state(self) -> dict[str, object]:
        return self.inner.state() if isinstance(self.inner, Stateful) else {}

    def load_state(self, state: dict[str, object]) -> None:
        if isinstance(self.inner, Stateful):
            self.inner.load_state(state)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._reference = {k: a.numpy() for k, a in arrays.items()}
        key, count = self.min_nodes
        wait_for_nodes(grid, count, self.wait_timeout, key)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        unknown = sorted({m.metadata.dst_node_id for m in messages} - self.profiles.keys())
        admit_profiles(query_profiles(grid, unknown, self.client_config, (1.0,), server_round,
                                      self.query_timeout), lambda _: {}, self.profiles, {}, grid)
        messages = [self._with_client_config(m) for m in messages if m.metadata.dst_node_id in self.profiles]
        self._sent_to = {m.metadata.dst_node_id for m in messages}
        return messages

    def _with_client_config(self, msg: Message) -> Message:
        config = msg.content.config_records.get(CONFIG, ConfigRecord())
        msg.content[CONFIG] = ConfigRecord({**self.client_config, **dict(config.items())})
        return msg

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        intake = take_replies(replies, self._checked, self._sent_to)
        intake.log(server_round)
        good = list(intake.passed.values())
        self.accepted_ratios = {m.metadata.src_node_id: 1.0 for m in good}
        # in partition order, not arrival order: the same seed gives the same model
        good.sort(key=lambda m: (self.profiles[m.metadata.src_node_id].client_key, m.metadata.src_node_id))
        good = _consistent(good)
        arrays, metrics = self.inner.aggregate_train(server_round, good) if good else (None, None)
        counts = {"replies": len(good), "failed-replies": intake.failed}
        return self._as_model(server_round, arrays), MetricRecord({**dict(metrics or {}), **counts})

    def _checked(self, msg: Message) -> Message:
        """``msg`` if it passes :func:`check_reply`, its num-examples kept as its node's profile allows."""
        node = msg.metadata.src_node_id
        check_reply(msg, self._reference, self.max_update_norm, profile=self.profiles[node])
        return msg

    def _as_model(self, server_round: int, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """The plug-in's new arrays in the model's dtypes (FedMedian and FedAdam return float64,
        which the server's evaluation and the next round's reply checks would refuse); None (the
        model is kept) when they are not the model's keys and shapes, or not finite."""
        if arrays is None:
            return None
        try:
            if set(arrays.keys()) != set(self._reference):
                raise ValueError(f"keys {sorted(arrays.keys())[:4]}... are not the model's")
            out = {}
            for key, expected in self._reference.items():
                value = arrays[key].numpy()
                if value.shape != expected.shape or not np.all(np.isfinite(value)):
                    raise ValueError(f"{key} is {list(value.shape)} or not finite")
                out[key] = Array(np.ascontiguousarray(value.astype(expected.dtype)))
        except ValueError as err:
            log(WARNING, "round %d: the strategy's aggregate is not a valid model (%s); the model is "
                "kept", server_round, err)
            return None
        return ArrayRecord(out)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return [self._with_client_config(m)
                for m in self.inner.configure_evaluate(server_round, arrays, config, grid)]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The plug-in's average of the evaluate replies, whose metrics are first cleaned and
        whose num-examples are capped as a train reply's (its weight in FedAvg's average)."""
        replies = list(replies)
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                continue
            for record in msg.content.metric_records.values():
                clean_metrics(record, node)
                cap = getattr(self.profiles.get(node), "examples_cap", None)
                examples = record.get("num-examples")
                if cap is not None and isinstance(examples, (int, float)) and not examples <= cap:
                    record["num-examples"] = cap
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
