"""Bilevel tasks: the model split into x and y, the losses g and f, and the data."""

from __future__ import annotations

from .base import (
    Batch,
    BilevelTask,
    ClientData,
    FeatureSplit,
    LayerSpec,
    OutputScaler,
    Params,
    bilevel_problem,
    cross_entropy,
    split_params,
)
from .class_prior import class_counts, logit_offsets
from .datasets import Normalization
from .hyper_cleaning import HyperCleaning
from .hyper_representation import HyperRepresentation, HyperRepresentationMLP
from .node_data import device_data
from .partition import (
    DataSpec,
    client_data,
    corrupted_mask,
    holdout_set,
    image_data,
    num_train_samples,
    train_coordinates,
)

TASKS = ("hyper-representation", "hyper-representation-mlp", "hyper-cleaning")


def build_task(name: str, in_shape: tuple[int, int, int], num_classes: int, mu: float,
               spec: DataSpec | None = None) -> BilevelTask:
    """The task ``name`` for inputs of ``in_shape`` (C, H, W) and ``num_classes`` classes.

    Clients call it without ``spec``; the server-side methods of a task with per-sample
    parameters (``num_samples``, ``owned_indices``, ``evaluate``) need it: see :func:`make_task`.
    """
    if name == "hyper-representation":
        return HyperRepresentation(in_shape=in_shape, num_classes=num_classes, mu=mu)
    if name == "hyper-representation-mlp":
        return HyperRepresentationMLP(in_shape=in_shape, num_classes=num_classes, mu=mu)
    if name == "hyper-cleaning":
        return HyperCleaning(in_shape=in_shape, num_classes=num_classes, mu=mu, spec=spec)
    raise ValueError(f"unknown task '{name}'; allowed: {', '.join(TASKS)}")


def make_task(name: str, spec: DataSpec, mu: float) -> BilevelTask:
    """The task ``name`` sized for the dataset of ``spec`` (and knowing its global train set)."""
    data = image_data(spec)
    return build_task(name, data.shape, data.num_classes, mu, spec)


__all__ = [
    "TASKS", "Batch", "BilevelTask", "FeatureSplit", "OutputScaler", "bilevel_problem", "cross_entropy",
    "class_counts", "logit_offsets", "build_task", "ClientData",
    "DataSpec", "HyperCleaning",
    "HyperRepresentation", "HyperRepresentationMLP", "LayerSpec", "Params", "client_data",
    "corrupted_mask", "device_data", "Normalization",
    "holdout_set", "image_data", "make_task", "num_train_samples", "split_params",
    "train_coordinates",
]
