"""What the server knows about each node: its profile (queried once) and the ratio it trains at."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from logging import INFO, WARNING

import numpy as np
from flwr.app import ConfigRecord
from flwr.common import log
from flwr.serverapp import Grid

from rabo_protocol.presets import Capacity, Sizing
from rabo_protocol.wire import decode_profile

from .claims import client_text


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
    examples_cap: int | None = None
    """The most num-examples a reply of the node weighs, which the server decides at admission
    (:func:`admit_profiles`; None: no bound)."""

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


EXAMPLES_VS_MEDIAN = 4
"""A node's replies weigh at most this many times the lower median of the train examples the
admitted nodes declared: a node that declares 1e9 examples does not buy the weight of ``mean``.
4: the largest partition of the built-in partitioners is at most 3.1 times the lower median
(``separated``, 4 partitions), so honest nodes of a simulation are never capped."""


def _federation_partitions(found: Sequence[NodeProfile], profiles: Mapping[int, NodeProfile],
                           connected: int) -> int | None:
    """The federation's one ``num-partitions``: the admitted nodes' (all equal), else the value
    most ``found`` nodes declare (ties: the one nearest ``connected``, then the larger), never 1
    while more than one node is connected (one node would own every sample)."""
    if fixed := next((p.num_partitions for p in profiles.values() if p.num_partitions is not None), None):
        return fixed
    votes = [p.num_partitions for p in found if p.num_partitions is not None
             and (p.num_partitions > 1 or connected <= 1)]
    if not votes:
        return None
    return max(set(votes), key=lambda n: (votes.count(n), -abs(n - connected), n))


def _refusal(profile: NodeProfile, partitions: int | None, held: Mapping[int, int]) -> str | None:
    """Why the server refuses ``profile``'s partition claim (None: it does not): ``held`` maps
    each partition id already admitted to its node."""
    pid, declared = profile.partition_id, profile.num_partitions
    if pid is None:
        return None
    if declared is not None and declared != partitions:
        alone = " (one partition of every sample, while other nodes are connected)" if declared == 1 else ""
        return f"it declares num-partitions={declared}, the federation has {partitions}{alone}"
    if partitions is not None and pid >= partitions:
        return f"its partition-id={pid} is not below the federation's num-partitions={partitions}"
    if held.get(pid, profile.node_id) != profile.node_id:
        return f"partition {pid} is held by node {held[pid]}"
    return None


def _examples_caps(profiles: Mapping[int, NodeProfile], coords_by_node: Mapping[int, Mapping[str, np.ndarray]]
                   ) -> dict[int, int | None]:
    """Each node's cap on the num-examples of its replies: its declaration, at most the samples it
    owns (per-sample tasks: the server knows them) and ``EXAMPLES_VS_MEDIAN`` x the lower median
    of the declarations (None: nothing bounds it)."""
    declared = sorted(p.num_examples for p in profiles.values() if p.num_examples is not None)
    median_bound = EXAMPLES_VS_MEDIAN * declared[(len(declared) - 1) // 2] if declared else None
    caps: dict[int, int | None] = {}
    for node, profile in profiles.items():
        coords = coords_by_node.get(node, {})
        bounds = [b for b in (profile.num_examples, median_bound,
                              min((len(c) for c in coords.values()), default=None)) if b is not None]
        caps[node] = min(bounds) if bounds else None
    return caps


def admit_profiles(found: Mapping[int, NodeProfile],
                   sample_coords_of: Callable[[NodeProfile], Mapping[str, np.ndarray]],
                   profiles: dict[int, NodeProfile], coords_by_node: dict[int, dict[str, np.ndarray]],
                   grid: Grid | None = None) -> None:
    """Add each ``found`` profile to ``profiles`` with its node's per-sample coordinates
    ``sample_coords_of(profile)`` in ``coords_by_node``, if the server accepts its claims; else log why and
    leave it out (it is queried again when next sampled).

    Partitions: the federation has one ``num-partitions`` (:func:`_federation_partitions`, with
    the nodes connected to ``grid`` now) and each partition id one node (the first admitted;
    ``found`` in node order), so per-sample coordinates never overlap. A node whose coordinates
    raise ValueError is left out. Sizes: every admitted node's ``examples_cap`` is recomputed
    (:func:`_examples_caps`), as each admission moves the median.
    """
    if not found:
        return
    batch = sorted(found.values(), key=lambda p: p.node_id)
    connected = len(list(grid.get_node_ids())) if grid is not None else 0
    partitions = _federation_partitions(batch, profiles, max(connected, len(profiles) + len(batch)))
    held = {p.partition_id: n for n, p in profiles.items() if p.partition_id is not None}
    for profile in batch:
        node = profile.node_id
        try:
            if reason := _refusal(profile, partitions, held):
                raise ValueError(reason)
            coords_by_node[node] = dict(sample_coords_of(profile))
        except ValueError as err:
            log(WARNING, "node %d left out: %s", node, client_text(err))
            continue
        profiles[node] = profile
        if profile.partition_id is not None:
            held[profile.partition_id] = node
        log(INFO, "node %d: partition %s, ratio %s (from %s), %s train examples", node,
            profile.partition_id, profile.ratio, profile.source, profile.num_examples)
    for node, cap in _examples_caps(profiles, coords_by_node).items():
        if cap != profiles[node].examples_cap:
            profiles[node] = replace(profiles[node], examples_cap=cap)
            if cap is not None and profiles[node].num_examples not in (None, cap):
                log(WARNING, "node %d declares %s train examples: its replies weigh at most %d (the "
                    "samples it owns, or %d x the median declaration)", node,
                    profiles[node].num_examples, cap, EXAMPLES_VS_MEDIAN)


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
