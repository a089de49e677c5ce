"""Data splits: disjoint, complete, seeded, and really IID / label-skewed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks import DataSpec, client_data, holdout_set
from tasks.datasets import load_images


def _labels(spec: DataSpec, pid: int) -> np.ndarray:
    return client_data(spec, pid).train.labels.numpy()


def test_splits_are_disjoint_and_cover_the_dataset() -> None:
    spec = DataSpec(dataset="sklearn-digits", num_partitions=5)
    rows = [holdout_set(spec).inputs.flatten(1)]
    for pid in range(5):
        data = client_data(spec, pid)
        rows += [data.train.inputs.flatten(1), data.val.inputs.flatten(1)]
    everything = torch.cat(rows)
    assert len(everything) == 1797
    # sklearn digits has a few duplicate images; compare multisets of rows
    distinct = torch.unique(load_images("sklearn-digits").images.flatten(1), dim=0)
    assert len(torch.unique(everything, dim=0)) == len(distinct)
    assert len(client_data(spec, 0).val) == pytest.approx(0.5 * (1797 * 0.8 / 5), abs=2)


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


def test_bad_partition_and_missing_download_are_clear() -> None:
    with pytest.raises(ValueError, match=r"partition-id=7 is outside \[0, 3\]"):
        client_data(DataSpec(num_partitions=4), 7)
    with pytest.raises(FileNotFoundError, match="dataset 'mnist' not found under data-dir="):
        load_images("mnist", "/nonexistent-rabo-data", download=False)
