"""Which nodes train in a round: a seeded draw, after waiting for enough nodes to connect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.common import log
from flwr.serverapp import Grid


class TooFewNodes(RuntimeError):
    """Fewer nodes than the run needs connected within the wait: the run stops with this message."""


def wait_for_nodes(grid: Grid, required: int, timeout: float,
                   key: str = "min-available-nodes") -> list[int]:
    """The connected node ids, sorted, once at least ``required`` are connected.

    Waits at most ``timeout`` seconds (the run's ``round-timeout``), then raises
    :class:`TooFewNodes` naming ``key``, the nodes connected and the wait: a run that can never
    start ends with one message instead of waiting forever (Flower's own sampling never gives up).
    """
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < required:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TooFewNodes(
                f"{key}={required} but only {len(nodes)} node(s) connected within {timeout:g} s "
                f"(round-timeout); lower {key} or start more SuperNodes")
        log(INFO, "Waiting for nodes: %d connected, %d required (%s)", len(nodes), required, key)
        time.sleep(min(1.0, left))
    return nodes


@dataclass(frozen=True)
class NodeSampling:
    """As FedAvg: ``max(fraction_train * connected, min_train_nodes)`` nodes (at most all), drawn
    with the seed (seed, round), once ``min_available_nodes`` are connected."""

    fraction_train: float = 1.0
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    wait_timeout: float = 600.0
    """Seconds to wait for ``min_available_nodes`` before the run stops."""
    seed: int = 0

    def sample(self, grid: Grid, server_round: int) -> list[int]:
        """The round's node ids, sorted; :class:`TooFewNodes` when too few nodes connect in time."""
        nodes = wait_for_nodes(grid, self.min_available_nodes, self.wait_timeout)
        size = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not ids: node ids are uint64 and would lose precision in numpy.
        return sorted(nodes[i] for i in rng.choice(len(nodes), size=size, replace=False))
