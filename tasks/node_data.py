"""A node's own data: an ``.npz`` file on the device (``data-path``), split into train and val.

The counterpart of tasks/partition.py for a node that trains on its own files instead of a share
of the run's dataset; its pixels are put on the run dataset's scale (:class:`Normalization`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import Batch, ClientData
from .datasets import ImageData, Normalization


def device_data(path: str, val_fraction: float, seed: int, partition_id: int | None = None,
                num_partitions: int | None = None, *,
                normalization: Normalization | None = None) -> ClientData:
    """A node's own data from an ``.npz`` file with ``images`` (N, C, H, W) or (N, H, W) and
    integer ``labels`` (N,); with ``partition_id``/``num_partitions``, only that IID share of it.

    Pixels are scaled to [0, 1] (uint8 / 255; floats are taken as already in [0, 1]) and
    standardised with ``normalization``, the run dataset's (the server sends it); without one,
    with the file's own statistics (a node alone, outside a run). Raises ValueError naming the
    problem.
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
    pixels = images.astype(np.float32) / scale
    normalization = normalization or Normalization.of(pixels)
    data = ImageData(normalization.apply(pixels), torch.as_tensor(labels, dtype=torch.int64),
                     int(labels.max()) + 1, normalization)
    order = np.random.default_rng([seed, 2]).permutation(len(labels))
    if partition_id is not None and num_partitions is not None:
        order = np.array_split(order, num_partitions)[partition_id]
    n_val = max(1, int(round(val_fraction * len(order))))
    val, train = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
    return ClientData(train=Batch(data.images[train], data.labels[train]),
                      val=Batch(data.images[val], data.labels[val]))
