"""The message format shared by the strategy and the ClientApp.

Train instruction: ``arrays`` = dense slices keyed ``"{part}:{param}"`` (part x, y or v) and
``config`` = the strategy's client config (``in-shape``, ``num-classes``, ``input-mean``,
``input-std``) plus ``server-round``,
``resource-ratio`` and ``width.{layer}`` for every layer. Train reply: ``arrays`` with parts
(x, y, v) for RAFBO or (h, y, v) for RABO (h = hypergradient, shaped like x) and ``metrics``
with ``num-examples``.
Query instruction: ``config`` = the client config and ``server-round``; reply (node profile):
``profile`` = {partition-id, num-partitions, resource-ratio} (-1 = unset), ``num-examples``
(the node's train examples: its train replies may not claim more), or {error}.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
PROFILE = "profile"
PARTS = ("x", "y", "v", "h")
REPLY_PARTS = {"rabo": ("h", "y", "v"), "rafbo": ("x", "y", "v")}


def pack(parts: Mapping[str, Mapping[str, np.ndarray | torch.Tensor]]) -> ArrayRecord:
    """{part: {param: tensor}} -> one ArrayRecord with keys ``part:param``."""
    record = ArrayRecord()
    for part, tensors in parts.items():
        for name, tensor in tensors.items():
            if isinstance(tensor, torch.Tensor):
                tensor = tensor.detach().cpu().numpy()
            record[f"{part}:{name}"] = Array(np.ascontiguousarray(tensor))
    return record


def unpack(record: ArrayRecord) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`pack`; raises ValueError on a key without a known part."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, array in record.items():
        part, sep, name = key.partition(":")
        if not sep or part not in PARTS:
            raise ValueError(f"unexpected array key '{key}'")
        parts.setdefault(part, {})[name] = array.numpy()
    return parts


def task_shape_config(in_shape: tuple[int, ...], num_classes: int, input_mean: float,
                      input_std: float) -> dict[str, list[int] | int | float]:
    """The model's input shape and classes (nodes build the model from these, not from a dataset)
    and the run dataset's input standardisation (nodes with their own files apply it)."""
    return {"in-shape": [int(d) for d in in_shape], "num-classes": int(num_classes),
            "input-mean": float(input_mean), "input-std": float(input_std)}


def task_shape_from_config(config: Mapping[str, object]) -> tuple[tuple[int, int, int], int]:
    channels, height, width = (int(d) for d in config["in-shape"])  # type: ignore[union-attr]
    return (channels, height, width), int(config["num-classes"])  # type: ignore[call-overload]


def widths_config(widths: Mapping[str, int]) -> dict[str, int]:
    return {f"width.{name}": int(w) for name, w in widths.items()}


def widths_from_config(config: Mapping[str, object]) -> dict[str, int]:
    prefix = "width."
    return {k[len(prefix):]: int(v) for k, v in config.items() if k.startswith(prefix)}  # type: ignore[arg-type]
