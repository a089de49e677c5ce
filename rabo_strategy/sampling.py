"""Which nodes train in a round: a seeded draw, after waiting for enough nodes to connect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.common.logger import log
from flwr.serverapp import Grid


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
        """The round's node ids, sorted; RuntimeError when too few nodes connect in time."""
        deadline = time.monotonic() + self.wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"min-available-nodes={self.min_available_nodes} but only {len(nodes)} node(s) "
                    f"connected within {self.wait_timeout:g} s (round-timeout); lower "
                    "min-available-nodes or start more SuperNodes")
            log(INFO, "Waiting for nodes: %d connected, %d required", len(nodes), self.min_available_nodes)
            time.sleep(1.0)
        size = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not ids: node ids are uint64 and would lose precision in numpy.
        return sorted(nodes[i] for i in rng.choice(len(nodes), size=size, replace=False))
