"""Every task by name, in one place, and the plug-in form ``package.module:factory``.

A task factory takes a :class:`TaskRequest` (the dataset's input shape and classes, the run's
task keys) and returns a :class:`~tasks.base.BilevelTask`. The built-in tasks are registered in
:data:`TASKS`; ``task='my_package.my_module:task'`` imports ``task`` from the Python environment
of the server and the nodes (see README, "Your own task").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .backbones import HyperRepresentationResNet, HyperRepresentationViT
from .base import BilevelTask
from .hyper_cleaning import HyperCleaning
from .hyper_representation import HyperRepresentation, HyperRepresentationMLP
from .network import BackboneTask, NormStats
from .partition import DataSpec


@dataclass(frozen=True)
class TaskRequest:
    """What a task factory is built from."""

    in_shape: tuple[int, int, int]
    """(channels, height, width) of one input."""
    num_classes: int
    mu: float
    """The ridge weight of the inner loss (``mu``)."""
    spec: DataSpec | None = None
    """The run's dataset (the server's; clients build tasks without it)."""
    norm_stats: NormStats = "batch"
    resnet_depth: int = 20
    resnet_width: int = 16


TaskFactory = Callable[[TaskRequest], BilevelTask]

TASKS: dict[str, TaskFactory] = {
    "hyper-representation": lambda r: HyperRepresentation(r.in_shape, r.num_classes, r.mu),
    "hyper-representation-mlp": lambda r: HyperRepresentationMLP(r.in_shape, r.num_classes, r.mu),
    "hyper-cleaning": lambda r: HyperCleaning(r.in_shape, r.num_classes, r.mu, spec=r.spec),
    "hyper-representation-resnet": lambda r: HyperRepresentationResNet(
        r.in_shape, r.num_classes, r.mu, r.norm_stats, depth=r.resnet_depth, width=r.resnet_width),
    "hyper-representation-vit": lambda r: HyperRepresentationViT(r.in_shape, r.num_classes, r.mu,
                                                                 r.norm_stats),
}


def backbone_task(factory: Callable[[tuple[int, int, int]], object]) -> TaskFactory:
    """The task factory of a hyper-representation task around ``factory(in_shape) -> nn.Module``
    (the backbone, x) with a linear head (y): the helper for your own network."""
    return lambda r: BackboneTask(r.in_shape, r.num_classes, r.mu, r.norm_stats, factory=factory)  # type: ignore[arg-type]


def task_factory(name: str) -> TaskFactory:
    """The factory of a built-in task, or of ``package.module:factory``."""
    if name in TASKS:
        return TASKS[name]
    module_name, _, attribute = name.partition(":")
    if not attribute:
        raise ValueError(f"unknown task '{name}'; allowed: {', '.join(TASKS)} or package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"module '{module_name}' does not import ({err}); install it "
                         "or put it on PYTHONPATH where the server and the nodes run") from err
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"module '{module_name}' has no callable '{attribute}'")
    return factory
