"""What the server knows about each node: its profile (queried once) and the ratio it trains at."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord, ConfigRecordValues, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from rabo_protocol.presets import Capacity, Sizing
from rabo_protocol.wire import CONFIG, PROFILE, decode_profile


@dataclass(frozen=True)
class NodeProfile:
    """A node's ratio and where it came from, its partition and its declared train examples."""

    node_id: int
    partition_id: int | None
    ratio: float
    source: str
    num_partitions: int | None = None
    num_examples: int | None = None
    """The train examples the node declared at query time: a reply's num-examples is bounded by it
    (None: not declared, not bounded)."""
    device_class: str | None = None
    """The node's device class on the virtual clock (None: the real clock)."""

    @property
    def client_key(self) -> int:
        """Seeds per-client mask choices: the partition id, else the node id."""
        return self.partition_id if self.partition_id is not None else self.node_id


def resolve_profile(node_id: int, record: ConfigRecord, levels: Sequence[float]) -> NodeProfile:
    """A node's ratio: the ``resource-ratio`` its profile declares, else ``levels[key % len]``.

    ``key`` is the node's ``partition-id`` (simulation) or, without one, its node id.
    ValueError for a profile that reports an error or holds an invalid value.
    """
    profile = decode_profile(record)
    if profile.resource_ratio is not None:
        ratio, source = profile.resource_ratio, profile.ratio_source
    else:
        key = profile.partition_id if profile.partition_id is not None else node_id
        ratio, source = float(levels[key % len(levels)]), "ratio-levels"
    return NodeProfile(node_id, profile.partition_id, ratio, source, profile.num_partitions,
                       profile.num_examples, profile.device_class)


def query_profiles(grid: Grid, nodes: Iterable[int], config: Mapping[str, ConfigRecordValues],
                   levels: Sequence[float], server_round: int, timeout: float) -> dict[int, NodeProfile]:
    """Ask ``nodes`` for their profile (the ClientApp also checks its data then); a node that does
    not answer, reports an error or sends an invalid profile is logged and left out of the result."""
    queries = [
        Message(content=RecordDict({CONFIG: ConfigRecord({**config, "server-round": server_round})}),
                dst_node_id=n, message_type=MessageType.QUERY, group_id=f"profile-{server_round}")
        for n in nodes
    ]
    profiles: dict[int, NodeProfile] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout) if queries else ():
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ValueError(reply.error.reason)
            profiles[node] = resolve_profile(node, reply.content[PROFILE], levels)
        except (KeyError, ValueError, TypeError) as err:
            log(WARNING, "node %d left out: its profile is invalid: %s", node, err)
    return profiles


def admit_profiles(found: Mapping[int, NodeProfile],
                   owned: Callable[[NodeProfile], Mapping[str, np.ndarray]],
                   profiles: dict[int, NodeProfile], owned_by_node: dict[int, dict[str, np.ndarray]]) -> None:
    """Add each ``found`` profile to ``profiles`` with its node's per-sample coordinates
    ``owned(profile)`` in ``owned_by_node``; a node whose coordinates raise ValueError is logged
    and left out."""
    for node, profile in found.items():
        try:
            owned_by_node[node] = dict(owned(profile))
        except ValueError as err:
            log(WARNING, "node %d left out: %s", node, err)
            continue
        profiles[node] = profile
        log(INFO, "node %d: partition %s, ratio %s (from %s), %s train examples", node,
            profile.partition_id, profile.ratio, profile.source, profile.num_examples)


@dataclass(frozen=True)
class RoundSizer:
    """The ratio a node trains at in a round, from its profile.

    ``sizing``: ``resource-adaptive`` (its own ratio), ``full-model`` (always 1) or ``drop-weak``
    (1 if its ratio is 1, else it sits the round out). ``capacity``: ``fixed`` (the profile's ratio)
    or ``dynamic`` (a node whose ratio comes from ``levels`` draws a level each round, seeded by
    (seed, round, client key); a ratio a node declares itself is a hardware limit and stays fixed)
    or ``deadline`` (the ratio the node picked for the deadline: the strategy updates its profile
    from each reply's ``next-ratio``, :class:`~rabo_strategy.clock.RoundClock`).
    """

    levels: tuple[float, ...]
    sizing: Sizing = "resource-adaptive"
    capacity: Capacity = "fixed"
    seed: int = 0

    def ratio(self, profile: NodeProfile, server_round: int) -> float | None:
        """The ratio ``profile``'s node trains at in ``server_round`` (None: it sits the round out)."""
        ratio = profile.ratio
        if self.capacity == "dynamic" and profile.source == "ratio-levels":
            draw = np.random.default_rng([self.seed, server_round, profile.client_key, 11])
            ratio = float(self.levels[int(draw.integers(len(self.levels)))])
        if self.sizing == "full-model":
            return 1.0
        if self.sizing == "drop-weak":
            return 1.0 if ratio >= 1.0 else None
        return ratio
