"""The reply checks of the built-in strategy, for any plug-in Flower Strategy.

A plug-in (``strategy='package.module:ClassName'``) is wrapped in :class:`ValidatedReplies`: its
``aggregate_train`` only sees the train replies that carry a model with the global arrays' keys,
shapes and dtypes, finite values, an update (reply minus the model sent) within
``max-update-norm``, and a finite positive ``num-examples``. The others are logged with their
reason and counted in the round's ``failed-replies``, as the built-in strategy counts its own.
Without it one NaN reply turns a FedAvg or FedMedian model into NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


def check_reply(msg: Message, reference: dict[str, np.ndarray], max_update_norm: float) -> None:
    """Raise ValueError saying what is wrong with a plug-in's train reply."""
    if msg.has_error():
        raise ValueError(f"client error: {msg.error.reason}")
    arrays = list(msg.content.array_records.values())
    metrics = list(msg.content.metric_records.values())
    if len(arrays) != 1 or len(metrics) != 1:
        raise ValueError(f"expected one ArrayRecord and one MetricRecord, got {len(arrays)} and "
                         f"{len(metrics)}")
    examples = metrics[0].get("num-examples")
    if (isinstance(examples, bool) or not isinstance(examples, (int, float))
            or not math.isfinite(examples) or examples <= 0):
        raise ValueError(f"num-examples={examples!r} is not a positive finite number")
    if set(arrays[0].keys()) != set(reference):
        raise ValueError(f"the reply's arrays {sorted(arrays[0].keys())[:4]}... are not the model's")
    squared = 0.0
    for key, array in arrays[0].items():
        value = array.numpy()
        expected = reference[key]
        if value.shape != expected.shape or value.dtype != expected.dtype:
            raise ValueError(f"{key} is {value.dtype}{list(value.shape)}, expected "
                             f"{expected.dtype}{list(expected.shape)}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{key} contains NaN or Inf")
        squared += float(np.sum(np.square(value - expected, dtype=np.float64)))
    if not math.sqrt(squared) <= max_update_norm:
        raise ValueError(f"update norm {math.sqrt(squared):.3g} above "
                         f"max-update-norm={max_update_norm:g}")


class ValidatedReplies(Strategy):
    """``inner`` (any Strategy) aggregating only the train replies that pass :func:`check_reply`."""

    def __init__(self, inner: Strategy, max_update_norm: float) -> None:
        self.inner = inner
        self.max_update_norm = max_update_norm
        self._reference: dict[str, np.ndarray] = {}
        self.accepted_nodes: set[int] = set()

    def __getattr__(self, name: str) -> object:  # state(), load_state() and the like of the plug-in
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._reference = {k: a.numpy() for k, a in arrays.items()}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good, failed = [], 0
        for msg in replies:
            try:
                check_reply(msg, self._reference, self.max_update_norm)
            except Exception as err:  # noqa: BLE001 - whatever a malformed reply raises is its failure
                failed += 1
                log(WARNING, "round %d: reply of node %d skipped: %s", server_round,
                    msg.metadata.src_node_id, err)
                continue
            good.append(msg)
        self.accepted_nodes = {m.metadata.src_node_id for m in good}
        arrays, metrics = self.inner.aggregate_train(server_round, good) if good else (None, None)
        counts = {"replies": len(good), "failed-replies": failed}
        return arrays, MetricRecord({**dict(metrics or {}), **counts})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()
