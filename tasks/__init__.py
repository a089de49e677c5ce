"""Bilevel tasks: the model split into x and y, the losses g and f, and the data."""

from __future__ import annotations

from .base import Batch, BilevelTask, ClientData, LayerSpec, Params, split_params
from .hyper_representation import HyperRepresentation
from .partition import DataSpec, client_data, device_data, holdout_set, image_data

TASKS = ("hyper-representation",)


def build_task(name: str, in_shape: tuple[int, int, int], num_classes: int, mu: float) -> BilevelTask:
    """The task ``name`` for inputs of ``in_shape`` (C, H, W) and ``num_classes`` classes."""
    if name == "hyper-representation":
        return HyperRepresentation(in_shape=in_shape, num_classes=num_classes, mu=mu)
    raise ValueError(f"unknown task '{name}'; allowed: {', '.join(TASKS)}")


def make_task(name: str, spec: DataSpec, mu: float) -> BilevelTask:
    """The task ``name`` sized for the dataset of ``spec``."""
    data = image_data(spec)
    return build_task(name, data.shape, data.num_classes, mu)


__all__ = [
    "TASKS", "Batch", "BilevelTask", "build_task", "ClientData", "DataSpec", "HyperRepresentation",
    "LayerSpec", "Params", "client_data", "device_data", "holdout_set", "image_data", "make_task",
    "split_params",
]
