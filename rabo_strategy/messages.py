"""A round's train messages: each node's dense slices of x, y, v and the widths of its submodel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from flwr.app import ConfigRecord, ConfigRecordValues, Message, MessageType, RecordDict

from rabo_protocol.wire import ARRAYS, CONFIG, pack, widths_config
from rabo_pruning.submodel import SliceIndex, SubmodelSpec
from tasks.structure import Structure

from .profiles import NodeProfile

SENT_PARTS = ("x", "y", "v")


@dataclass(frozen=True)
class Sent:
    """What a node was sent this round: what its reply is checked against and scattered back by."""

    client_key: int
    ratio: float
    index: dict[str, SliceIndex]
    """Parameter name -> the node's slice of it."""
    num_examples: int | None = None
    """The train examples the node declared (bounds its reply's num-examples)."""
    examples_cap: int | None = None
    """The most num-examples its reply weighs (the server's, ``NodeProfile.examples_cap``)."""
    partition_id: int | None = None
    """The node's partition as the server admitted it (its reply's ``partition-id``)."""


def train_messages(
    layers: Structure, parts: Mapping[str, Mapping[str, np.ndarray]],
    training: Sequence[tuple[NodeProfile, float]], specs: Sequence[SubmodelSpec],
    coords_by_node: Mapping[int, Mapping[str, np.ndarray]], config: Mapping[str, ConfigRecordValues],
    server_round: int,
) -> tuple[list[Message], dict[int, Sent]]:
    """One train message per (node profile, ratio) of ``training`` with its mask ``specs`` (and
    the coordinates of its samples in ``coords_by_node``), and what each node was sent, by node id."""
    shapes = {name: t.shape for part in ("x", "y") for name, t in parts[part].items()}
    messages, sent = [], {}
    for (profile, ratio), spec in zip(training, specs, strict=True):
        node = profile.node_id
        spec = replace(spec, sample_coords=dict(coords_by_node.get(node, {})))
        index = spec.indices(layers, shapes)
        slices = {part: {name: index[name].take(t) for name, t in parts[part].items()} for part in SENT_PARTS}
        widths = widths_config(spec.widths(layers))
        node_config = ConfigRecord({**config, "server-round": server_round, "resource-ratio": ratio,
                                    **widths})
        messages.append(Message(content=RecordDict({ARRAYS: pack(slices), CONFIG: node_config}),
                                dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(server_round)))
        sent[node] = Sent(profile.client_key, ratio, index, profile.num_examples, profile.examples_cap,
                          profile.partition_id)
    return messages, sent
