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
from .network import BackboneTask, NetworkTask
from .node_data import device_data
from .partition import (
    DataSpec,
    client_data,
    corrupted_mask,
    holdout_set,
    image_data,
    num_train_samples,
    root_set,
    train_coordinates,
)
from .registry import DEFAULT_TASK, TASKS, TaskEntry, TaskRequest, backbone_task, task_factory
from .structure import Structure


def build_task(name: str, in_shape: tuple[int, int, int], num_classes: int, mu: float,
               spec: DataSpec | None = None, **options: object) -> BilevelTask:
    """The task ``name`` (built-in or ``package.module:factory``) for inputs of ``in_shape``
    (C, H, W) and ``num_classes`` classes; ``options`` are the other :class:`TaskRequest` fields
    (``norm_stats``, ``resnet_depth``, ``resnet_width``).

    Clients call it without ``spec``; the server-side methods of a task with per-sample
    parameters (``num_samples``, ``sample_coords``, ``evaluate``) need it: see :func:`make_task`.
    """
    request = TaskRequest(tuple(in_shape), num_classes, mu, spec, **options)  # type: ignore[arg-type]
    return task_factory(name)(request)


def make_task(name: str, spec: DataSpec, mu: float, **options: object) -> BilevelTask:
    """The task ``name`` sized for the dataset of ``spec`` (and knowing its global train set)."""
    data = image_data(spec)
    return build_task(name, data.shape, data.num_classes, mu, spec, **options)


__all__ = [
    "DEFAULT_TASK", "TASKS", "BackboneTask", "NetworkTask", "Structure", "TaskEntry", "TaskRequest",
    "backbone_task", "task_factory",
    "Batch", "BilevelTask", "FeatureSplit", "OutputScaler", "bilevel_problem", "cross_entropy",
    "class_counts", "logit_offsets", "build_task", "ClientData",
    "DataSpec", "HyperCleaning",
    "HyperRepresentation", "HyperRepresentationMLP", "LayerSpec", "Params", "client_data",
    "corrupted_mask", "device_data", "Normalization",
    "holdout_set", "image_data", "make_task", "num_train_samples", "root_set", "split_params",
    "train_coordinates",
]
