"""Evaluation on the nodes: each node scores the submodel it would deploy on its own held-out data.

The submodel a node deploys at ratio r is the leading ``round(r * width)`` units of every group
(the ``static`` mask): one fixed network per ratio, the same for every node of that ratio and for
every mask policy, so per-ratio numbers compare across policies. With the nested ``static`` masks
it is the network the node trained; with staggered ones (``coverage``, ``rolling``) it is the same
units at the same cost, whose training came from whichever clients covered them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, ConfigRecordValues, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log

from rabo_protocol.wire import ARRAYS, CONFIG, METRICS, pack, widths_config
from rabo_pruning import submodel_spec
from tasks.structure import Structure

from .claims import client_text
from .profiles import NodeProfile

Statistics = Callable[[Mapping[str, int], Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                      Mapping[str, np.ndarray]]
"""(widths, x, y) of a submodel -> its normalization statistics (``norm-stats='recalibrate'``)."""


def evaluation_round(server_round: int, every: int, last_round: int) -> bool:
    """Whether nodes evaluate after ``server_round``: every ``every`` rounds and at the last (0: never)."""
    return every > 0 and (server_round % every == 0 or server_round == last_round)


@dataclass(frozen=True)
class EvalSent:
    """What a node was asked to evaluate: the ratio of the submodel it deploys."""

    client_key: int
    ratio: float


def evaluate_messages(
    structure: Structure, parts: Mapping[str, Mapping[str, np.ndarray]], profiles: Sequence[NodeProfile],
    coords_by_node: Mapping[int, Mapping[str, np.ndarray]], config: Mapping[str, ConfigRecordValues],
    server_round: int, statistics: Statistics | None = None,
) -> tuple[list[Message], dict[int, EvalSent]]:
    """One evaluate message per node of ``profiles``: the slices of x and y of the submodel at its
    profile's ratio (its capacity, whatever the strategy trained it at), its widths and, when
    ``statistics`` is given, the statistics of that submodel (part ``s``)."""
    messages, sent = [], {}
    submodels: dict[object, tuple[dict[str, int], dict[str, dict[str, np.ndarray]]]] = {}
    for profile in profiles:
        coords = dict(coords_by_node.get(profile.node_id, {}))
        spec = replace(submodel_spec(structure, profile.ratio), sample_coords=coords)
        key = (profile.node_id,) if coords else profile.ratio  # per-sample parts: the node's own
        if key not in submodels:
            slices = spec.take(structure, parts)
            widths = spec.widths(structure)
            if statistics is not None:
                slices["s"] = dict(statistics(widths, slices["x"], slices["y"]))
            submodels[key] = (widths, slices)
        widths, slices = submodels[key]
        node_config = ConfigRecord({**config, "server-round": server_round, **widths_config(widths)})
        messages.append(Message(content=RecordDict({ARRAYS: pack(slices), CONFIG: node_config}),
                                dst_node_id=profile.node_id, message_type=MessageType.EVALUATE,
                                group_id=f"evaluate-{server_round}"))
        sent[profile.node_id] = EvalSent(profile.client_key, profile.ratio)
    return messages, sent


def _score(msg: Message) -> tuple[float, float]:
    """(accuracy, loss) of an evaluate reply; ValueError when they are not a probability and a
    finite loss >= 0."""
    if msg.has_error():
        raise ValueError(f"client error: {client_text(msg.error.reason)}")
    record = msg.content.metric_records.get(METRICS)
    if record is None:
        raise ValueError("no metrics")
    accuracy, loss = record.get("eval-accuracy"), record.get("eval-loss")
    if not (isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"eval-accuracy={client_text(repr(accuracy), 40)} is not in [0, 1]")
    if not (isinstance(loss, float) and math.isfinite(loss) and loss >= 0.0):
        raise ValueError(f"eval-loss={client_text(repr(loss), 40)} is not a finite number >= 0")
    return accuracy, loss


def node_metrics(server_round: int, replies: Sequence[Message], sent: Mapping[int, EvalSent]
                 ) -> tuple[MetricRecord, list[dict[str, float | int]]]:
    """The nodes' accuracy and loss, averaged over nodes (each node counts once, whatever the
    number of examples it reports: nothing a node claims weighs its score), overall
    (``eval-accuracy``, ``eval-loss``) and per deployed ratio (``eval-accuracy@<r>``), with
    ``eval-nodes``; and one row per node (round, node-id, partition-id, resource-ratio, accuracy,
    loss). A reply not asked for, a second one, or one without a valid score is logged and left out."""
    scores: dict[int, tuple[float, float]] = {}
    for msg in replies:
        node = msg.metadata.src_node_id
        try:
            if node not in sent or node in scores:
                raise ValueError("not asked for" if node not in sent else "a second reply")
            scores[node] = _score(msg)
        except ValueError as err:
            log(WARNING, "round %d: evaluate reply of node %d skipped: %s", server_round, node, err)
    rows: list[dict[str, float | int]] = [
        {"round": server_round, "node-id": node, "partition-id": sent[node].client_key,
         "resource-ratio": sent[node].ratio, "eval-accuracy": acc, "eval-loss": loss}
        for node, (acc, loss) in sorted(scores.items(), key=lambda item: sent[item[0]].client_key)]
    metrics: dict[str, float | int] = {"eval-nodes": len(rows)}
    if rows:
        metrics["eval-accuracy"] = float(np.mean([r["eval-accuracy"] for r in rows]))
        metrics["eval-loss"] = float(np.mean([r["eval-loss"] for r in rows]))
        for ratio in sorted({float(r["resource-ratio"]) for r in rows}, reverse=True):
            metrics[f"eval-accuracy@{ratio:g}"] = float(np.mean(
                [r["eval-accuracy"] for r in rows if r["resource-ratio"] == ratio]))
    return MetricRecord(metrics), rows


class NodeEvaluation:
    """The strategy's evaluation on the nodes: which rounds, what was asked, the rows so far.

    Args:
        every: ``node-eval-every`` (0: never).
        last_round: the run's last round (always evaluated when ``every`` > 0).
        statistics: sent with each submodel (``norm-stats='recalibrate'``), or None.
    """

    def __init__(self, every: int, last_round: int, statistics: Statistics | None = None) -> None:
        self.every, self.last_round, self.statistics = every, last_round, statistics
        self.rows: list[dict[str, float | int]] = []
        """One row per node evaluation: round, node, partition, ratio, accuracy, loss."""
        self._sent: dict[int, EvalSent] = {}

    def configure(self, server_round: int, structure: Structure,
                  parts: Mapping[str, Mapping[str, np.ndarray]], profiles: Sequence[NodeProfile],
                  coords_by_node: Mapping[int, Mapping[str, np.ndarray]],
                  config: Mapping[str, ConfigRecordValues]) -> list[Message]:
        if not evaluation_round(server_round, self.every, self.last_round):
            return []
        profiles = sorted(profiles, key=lambda p: (p.client_key, p.node_id))
        messages, self._sent = evaluate_messages(structure, parts, profiles, coords_by_node, config,
                                                 server_round, self.statistics)
        return messages

    def aggregate(self, server_round: int, replies: Sequence[Message]) -> MetricRecord:
        metrics, rows = node_metrics(server_round, replies, self._sent)
        self.rows.extend(rows)
        return metrics
