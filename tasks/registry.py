"""Every task by name, in one place, and the plug-in form ``package.module:factory``.

A task factory takes a :class:`TaskRequest` (the dataset's input shape and classes, the run's
task keys) and returns a :class:`~tasks.base.BilevelTask`. The built-in tasks are registered in
:data:`TASKS`, each with the run-config values it needs (:class:`TaskEntry`); the ``task`` key's
allowed values and the per-task defaults (``rabo_protocol.defaults``) are read from there, so a
new task is its module and one row. ``task='my_package.my_module:task'`` imports ``task`` from the
Python environment of the server and the nodes (see README, "Your own task").

Why the tasks' defaults differ (``benchmarks/task_defaults.py``: one key at a time around each
task's row, 30 rounds; docs/results.md, "Per-task defaults"). Hyper-cleaning's x is one logit per
training sample, which gets a gradient only when its sample is in the minibatch, so it needs outer
steps about 1,000 times larger than a network's weights; its inner problem (a linear head with
mu-regularisation) needs a larger mu to be well conditioned, and v a longer solve. With the
hyper-representation values it does not learn; RAFBO's trust region (relative to ||x||) stays
off, as its x starts at 0. The two networks differ (``benchmarks/label_skew.py``, docs/results.md,
"Label skew"): the CNN learns more with RAFBO's local outer steps (guarded by the trust region),
and its staggered ``coverage`` windows spread the small clients' data over every unit. The MLP's
single hidden layer is the classifier's input: staggered windows there make the rows of the
classes that only small clients hold far louder than the others once the full model sums every
window (when the budgets and the classes are correlated, the full-size clients' classes are
lost), and nested ``static`` windows do not; RABO is as accurate there for a third of the client
compute.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .backbones import HyperRepresentationResNet, HyperRepresentationViT
from .base import BilevelTask
from .hyper_cleaning import HyperCleaning
from .hyper_representation import HyperRepresentation, HyperRepresentationMLP
from .hyper_representation_mlp2 import HyperRepresentationMLP2
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


@dataclass(frozen=True)
class TaskEntry:
    """A built-in task: its factory and what it asks of the run config."""

    factory: TaskFactory
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Run-config values (hyphenated keys) the task takes when the user leaves the key unset or
    ``"auto"``: :data:`DEFAULT_TASK`'s row names every such key (``rabo_protocol.defaults.TUNED_KEYS``)
    and is the global default; another task's row lists where it differs."""
    needs_label_noise: bool = False
    """The task cleans corrupted labels: a run without ``label-noise`` has nothing to clean."""


DEFAULT_TASK = "hyper-representation"
TASKS: dict[str, TaskEntry] = {
    DEFAULT_TASK: TaskEntry(
        lambda r: HyperRepresentation(r.in_shape, r.num_classes, r.mu),
        {"algorithm": "rafbo", "mu": 1e-3, "outer-lr": 0.1, "v-lr": 0.1, "v-steps": 5,
         "mask-policy": "coverage", "outer-trust-region": 0.2}),
    "hyper-representation-mlp": TaskEntry(
        lambda r: HyperRepresentationMLP(r.in_shape, r.num_classes, r.mu),
        {"algorithm": "rabo", "mask-policy": "static"}),
    "hyper-cleaning": TaskEntry(
        lambda r: HyperCleaning(r.in_shape, r.num_classes, r.mu, spec=r.spec),
        {"mu": 1e-2, "outer-lr": 100.0, "v-steps": 10, "outer-trust-region": 0.0}, needs_label_noise=True),
    "hyper-representation-resnet": TaskEntry(lambda r: HyperRepresentationResNet(
        r.in_shape, r.num_classes, r.mu, r.norm_stats, depth=r.resnet_depth, width=r.resnet_width)),
    "hyper-representation-vit": TaskEntry(lambda r: HyperRepresentationViT(
        r.in_shape, r.num_classes, r.mu, r.norm_stats)),
    # nested static windows, as the MLP's: its last hidden layer is the classifier's input
    "hyper-representation-mlp2": TaskEntry(
        lambda r: HyperRepresentationMLP2(r.in_shape, r.num_classes, r.mu), {"mask-policy": "static"}),
}


def backbone_task(factory: Callable[[tuple[int, int, int]], object]) -> TaskFactory:
    """The task factory of a hyper-representation task around ``factory(in_shape) -> nn.Module``
    (the backbone, x) with a linear head (y): the helper for your own network."""
    return lambda r: BackboneTask(r.in_shape, r.num_classes, r.mu, r.norm_stats, factory=factory)  # type: ignore[arg-type]


def task_factory(name: str) -> TaskFactory:
    """The factory of a built-in task, or of ``package.module:factory``."""
    if name in TASKS:
        return TASKS[name].factory
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
