"""The partitioners of the ``partitioner`` key, by name: one registry, :data:`PARTITIONERS`.

``separated`` is the budget-correlated split at correlation 1, where the groups never meet. Each
factory imports flwr-datasets when it is called, as it brings HF datasets, pandas and pyarrow
(about 3 s) that an edge node training on its own files never needs; the names alone (the key's
allowed values) import nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

    from .partition import DataSpec

Ratios = tuple[float, ...]
"""Each partition's resource ratio."""


def _iid(spec: DataSpec, ratios: Ratios) -> Partitioner:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=spec.num_partitions)


def _dirichlet(spec: DataSpec, ratios: Ratios) -> Partitioner:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(num_partitions=spec.num_partitions, partition_by="label",
                                alpha=spec.dirichlet_alpha, seed=spec.seed, min_partition_size=2,
                                self_balancing=True)


def _shards(spec: DataSpec, ratios: Ratios) -> Partitioner:
    from flwr_datasets.partitioner import ShardPartitioner

    return ShardPartitioner(num_partitions=spec.num_partitions, partition_by="label",
                            num_shards_per_partition=spec.shards_per_client, shuffle=True, seed=spec.seed)


def _budget_correlated(spec: DataSpec, ratios: Ratios) -> Partitioner:
    from .budget_partitioner import BudgetCorrelatedPartitioner

    return BudgetCorrelatedPartitioner(ratios, spec.budget_correlation, seed=spec.seed)


def _separated(spec: DataSpec, ratios: Ratios) -> Partitioner:
    from .budget_partitioner import BudgetCorrelatedPartitioner

    return BudgetCorrelatedPartitioner(ratios, 1.0, seed=spec.seed)  # the groups never meet


PARTITIONERS: dict[str, Callable[[DataSpec, Ratios], Partitioner]] = {
    "iid": _iid, "dirichlet": _dirichlet, "shards": _shards, "budget-correlated": _budget_correlated,
    "separated": _separated,
}
"""Name -> factory (the spec, each partition's ratio); the ``partitioner`` key's allowed values."""
PartitionerName = Literal[tuple(PARTITIONERS)]  # type: ignore[valid-type]


def make_partitioner(spec: DataSpec, ratios: Ratios) -> Partitioner:
    """The flwr-datasets partitioner of ``spec.partitioner`` (``ratios``: each partition's ratio)."""
    if spec.partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner '{spec.partitioner}'; allowed: {', '.join(PARTITIONERS)}")
    return PARTITIONERS[spec.partitioner](spec, ratios)
