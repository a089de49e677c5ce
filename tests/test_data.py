"""Data splits: disjoint, complete, seeded, really IID / label-skewed; the global train set is
independent of the partitioning; label noise corrupts exactly the flagged training labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import (
    DataSpec,
    client_data,
    corrupted_mask,
    holdout_set,
    image_data,
    num_train_samples,
    train_coordinates,
)
from tasks.datasets import load_images

DIGITS = DataSpec(dataset="sklearn-digits", num_partitions=5)
NOISY = replace(DIGITS, label_noise=0.3)


def _labels(spec: DataSpec, pid: int) -> np.ndarray:
    return client_data(spec, pid).train.labels.numpy()


def test_splits_are_disjoint_and_cover_the_dataset() -> None:
    rows = [holdout_set(DIGITS).inputs.flatten(1)]
    n_val = 0
    for pid in range(5):
        data = client_data(DIGITS, pid)
        rows += [data.train.inputs.flatten(1), data.val.inputs.flatten(1)]
        n_val += len(data.val)
    everything = torch.cat(rows)
    assert len(everything) == 1797
    # sklearn digits has a few duplicate images; compare multisets of rows
    distinct = torch.unique(load_images("sklearn-digits").images.flatten(1), dim=0)
    assert len(torch.unique(everything, dim=0)) == len(distinct)
    pool = 1797 - len(holdout_set(DIGITS))
    # each pool sample is validation with probability val-fraction (binomial, sd ~ 19)
    assert n_val == pytest.approx(0.5 * pool, abs=0.05 * pool)
    assert n_val + num_train_samples(DIGITS) == pool


def test_iid_partitions_hold_every_class_and_dirichlet_skews_them() -> None:
    iid = DataSpec(num_partitions=10)
    for pid in range(3):
        counts = np.bincount(_labels(iid, pid), minlength=10)
        assert counts.min() >= 0.5 * counts.mean()  # the packaged data is sorted by label
    skewed = DataSpec(num_partitions=10, partitioner="dirichlet", dirichlet_alpha=0.1)
    shares = [np.bincount(_labels(skewed, pid), minlength=10).max() / len(_labels(skewed, pid))
              for pid in range(10)]
    assert np.mean(shares) > 0.4


def test_splits_are_seeded() -> None:
    a, b = DataSpec(seed=1, num_partitions=4), DataSpec(seed=2, num_partitions=4)
    again = DataSpec(seed=1, num_partitions=4)
    assert torch.equal(client_data(a, 3).train.labels, client_data(again, 3).train.labels)
    assert not torch.equal(client_data(a, 3).train.labels, client_data(b, 3).train.labels)
    noisy = replace(a, dataset="sklearn-digits", label_noise=0.3)
    assert np.array_equal(corrupted_mask(noisy), corrupted_mask(replace(noisy, num_partitions=9)))
    assert not np.array_equal(corrupted_mask(noisy), corrupted_mask(replace(noisy, seed=2)))


def test_bad_partition_and_missing_download_are_clear() -> None:
    with pytest.raises(ValueError, match=r"partition-id=7 is outside \[0, 3\]"):
        client_data(DataSpec(num_partitions=4), 7)
    with pytest.raises(ValueError, match=r"partition-id=7 is outside \[0, 3\]"):
        train_coordinates(DataSpec(num_partitions=4), 7)
    with pytest.raises(FileNotFoundError, match="dataset 'mnist' not found under data-dir="):
        load_images("mnist", "/nonexistent-rabo-data", download=False)
    with pytest.raises(ValueError, match=r"label-noise=1.5 must lie in \[0, 1\]"):
        DataSpec(label_noise=1.5)


def test_partitions_without_train_or_val_samples() -> None:
    all_val = replace(DIGITS, num_partitions=10, val_fraction=0.999)
    with pytest.raises(ValueError, match="partition-id=0 has no training samples"):
        client_data(all_val, 0)
    no_val = replace(DIGITS, num_partitions=10, val_fraction=1e-6)
    data = client_data(no_val, 0)
    assert len(data.train) > 0 and data.val is data.train


@pytest.mark.parametrize("spec", [NOISY, replace(NOISY, partitioner="dirichlet", dirichlet_alpha=0.3)])
def test_train_coordinates_partition_the_global_train_set(spec: DataSpec) -> None:
    coords = [train_coordinates(spec, pid) for pid in range(spec.num_partitions)]
    for pid, c in enumerate(coords):
        assert np.all(np.diff(c) > 0)  # ascending, no repeats
        assert len(c) == len(client_data(spec, pid).train)
    union = np.concatenate(coords)
    assert len(union) == len(np.unique(union))  # disjoint
    assert np.array_equal(np.sort(union), np.arange(num_train_samples(spec)))  # complete


def _global_train(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The global train set, rebuilt from the clients' splits by coordinate."""
    n = num_train_samples(spec)
    inputs = torch.full((n, *image_data(spec).shape), float("nan"))
    labels = torch.full((n,), -1, dtype=torch.int64)
    for pid in range(spec.num_partitions):
        coords, train = torch.as_tensor(train_coordinates(spec, pid)), client_data(spec, pid).train
        inputs[coords], labels[coords] = train.inputs, train.labels
    return inputs, labels


def test_global_train_set_does_not_depend_on_the_partitioning() -> None:
    three, seven = replace(NOISY, num_partitions=3), replace(NOISY, num_partitions=7)
    assert num_train_samples(three) == num_train_samples(seven) == num_train_samples(NOISY)
    (inputs3, labels3), (inputs7, labels7) = _global_train(three), _global_train(seven)
    assert not torch.isnan(inputs3).any() and torch.equal(inputs3, inputs7)
    assert torch.equal(labels3, labels7)
    # one partition: the client's train split is the global train set, in coordinate order
    whole = client_data(replace(NOISY, num_partitions=1), 0).train
    assert torch.equal(whole.inputs, inputs3) and torch.equal(whole.labels, labels3)


def test_label_noise_corrupts_exactly_the_flagged_training_labels() -> None:
    clean_spec = replace(NOISY, label_noise=0.0)
    mask = corrupted_mask(NOISY)
    assert len(mask) == num_train_samples(NOISY) and not corrupted_mask(clean_spec).any()
    assert mask.mean() == pytest.approx(0.3, abs=0.05)  # n ~ 730: sd ~ 0.017
    _, noisy = _global_train(NOISY)
    _, clean = _global_train(clean_spec)
    assert torch.all(noisy[mask] != clean[mask])  # a corrupted label is another class
    assert torch.equal(noisy[~mask], clean[~mask])
    assert noisy.min() >= 0 and noisy.max() < image_data(NOISY).num_classes
    # corrupted labels are spread over the other classes, not a fixed permutation
    pairs = {(int(c), int(n)) for c, n in zip(clean[mask], noisy[mask], strict=True)}
    assert len(pairs) > 50
    # validation and test labels stay clean; the train/val split does not move with the noise
    for pid in range(NOISY.num_partitions):
        noisy_data, clean_data = client_data(NOISY, pid), client_data(clean_spec, pid)
        assert torch.equal(noisy_data.val.inputs, clean_data.val.inputs)
        assert torch.equal(noisy_data.val.labels, clean_data.val.labels)
        assert torch.equal(noisy_data.train.inputs, clean_data.train.inputs)
    assert torch.equal(holdout_set(NOISY).labels, holdout_set(clean_spec).labels)
    # the clean split keeps the dataset's labels (as multisets over train + val + test)
    counts = np.bincount(holdout_set(clean_spec).labels.numpy(), minlength=10)
    counts += np.bincount(clean.numpy(), minlength=10)
    for pid in range(clean_spec.num_partitions):
        counts += np.bincount(client_data(clean_spec, pid).val.labels.numpy(), minlength=10)
    assert np.array_equal(counts, np.bincount(image_data(clean_spec).labels.numpy(), minlength=10))


def test_a_nodes_arrays_are_built_once_then_read_from_disk(tmp_path: Path) -> None:
    from tasks.disk_cache import cached_arrays

    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(3)}

    first = cached_arrays(str(tmp_path), "k", build)
    assert (cached_arrays(str(tmp_path), "k", build)["a"] == first["a"]).all() and len(calls) == 1
    cached_arrays(str(tmp_path), "another key", build)
    assert len(calls) == 2
    for stored in (tmp_path / "cache").iterdir():  # a file cut short by a crash is built again
        stored.write_bytes(b"PK")
    assert (cached_arrays(str(tmp_path), "k", build)["a"] == first["a"]).all() and len(calls) == 3


def test_a_partition_read_back_from_disk_is_the_partition(tmp_path: Path) -> None:
    """A new ClientApp process (here: the in-process caches cleared) reads the same partition."""
    from tasks import partition

    spec = DataSpec(dataset="sklearn-digits", data_dir=str(tmp_path), num_partitions=3,
                    partitioner="dirichlet", dirichlet_alpha=0.3)
    built = client_data(spec, 1)
    partition._images.cache_clear()
    partition._positions_cached.cache_clear()
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the images and the partition's positions
    again = client_data(spec, 1)
    assert torch.equal(built.train.labels, again.train.labels)
    assert torch.equal(built.val.inputs, again.val.inputs)
