"""Bilevel tasks: the model split into x and y, the losses g and f, and the data."""

from __future__ import annotations

from .base import Batch, BilevelTask, ClientData, LayerSpec, Params, split_params
from .hyper_representation import HyperRepresentation
from .partition import DataSpec, client_data, device_data, holdout_set, image_data

TASKS = ("hyper-representation",)


def make_task(name: str, spec: DataSpec, mu: float) -> BilevelTask:
    """The task ``name`` sized for the dataset of ``spec``."""
    if name == "hyper-representation":
        data = image_data(spec)
        return HyperRepresentation(in_shape=data.shape, num_classes=data.num_classes, mu=mu)
    raise ValueError(f"unknown task '{name}'; allowed: {', '.join(TASKS)}")


__all__ = [
    "TASKS", "Batch", "BilevelTask", "ClientData", "DataSpec", "HyperRepresentation",
    "LayerSpec", "Params", "client_data", "device_data", "holdout_set", "image_data", "make_task",
    "split_params",
]
