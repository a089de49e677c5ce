"""The benchmarks' shared words: tasks, data splits and methods by name, each a set of run-config keys.

A script that says ``mlp``, ``separated`` or ``drop-weak`` means the runs every other script means by
that word. The keys come from the presets in ``conf/`` where one exists (:func:`benchmarks.common.preset`,
Flower's own parser), so a benchmark's run is the preset's run plus the keys it sweeps.

    >>> from benchmarks.vocab import METHODS, SPLITS, TASKS, sampled
    >>> task = TASKS["mlp"]
    >>> config = {**task.config, **SPLITS["separated"], **METHODS["drop-weak"],
    ...           **sampled(task.clients, task.per_round)}
    >>> config["task"], config["partitioner"], config["strategy"], config["min-train-nodes"]
    ('hyper-representation-mlp', 'separated', 'drop-weak', 10)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from benchmarks.common import preset
from rabo_protocol.presets import STRATEGIES

__all__ = ["CORE", "HYPER_REPRESENTATION", "METHODS", "SPLITS", "STRATEGIES", "TASKS", "TaskSetting",
           "sampled", "splits"]


class TaskSetting(NamedTuple):
    """A task as the benchmarks run it: its run-config keys, the clients of its federation and how
    many of them train each round."""

    config: dict[str, Any]
    clients: int
    per_round: int


TASKS: dict[str, TaskSetting] = {
    "cnn": TaskSetting({"task": "hyper-representation"}, 10, 10),
    "mlp": TaskSetting(preset("mlp"), 100, 10),  # its fraction-train and min-train-nodes: set per run
    "hyper-cleaning": TaskSetting(preset("hyper-cleaning"), 10, 10),  # label-noise 0.5, the task's defaults
}
"""The tasks: the CNN hyper-representation (the default run's), FedNest's 784-200-10 MLP (100
clients, 10 a round) and hyper-cleaning at label noise 0.5."""
HYPER_REPRESENTATION = ("cnn", "mlp")
"""The two hyper-representation tasks, the pair the heterogeneity and label-skew benchmarks run."""


def sampled(clients: int, per_round: int) -> dict[str, Any]:
    """The keys that train ``per_round`` of ``clients`` clients each round."""
    return {"fraction-train": per_round / clients, "min-train-nodes": per_round}


SPLITS: dict[str, dict[str, Any]] = {
    "iid": {"partitioner": "iid"},
    "dirichlet-0.3": preset("dirichlet"),
    "shards-2": preset("shards"),
    "budget-correlated": preset("budget-correlated"),
    "separated": preset("separated"),
}
"""The data splits: IID (the default run's), Dirichlet(0.3), two label shards per client, budgets
correlated with the classes (0.9: classes 5-9 mostly on the clients below full size) and separated
(correlation 1: the two groups never meet)."""


def splits(*names: str) -> dict[str, dict[str, Any]]:
    """The splits ``names``, in that order."""
    return {name: SPLITS[name] for name in names}


METHODS: dict[str, dict[str, Any]] = {"resource-adaptive": {},
                                      **{name: preset(name) for name in STRATEGIES[1:]}}
"""Each built-in strategy as a method: ``resource-adaptive`` is the recommended one (the task's
defaults, tasks/registry.py); the others are their presets, with the same defaults."""
CORE = ("resource-adaptive", "full-model", "drop-weak")
"""The methods every comparison needs: the recommended one, the unconstrained full model and the
baseline that drops the clients below full size."""
