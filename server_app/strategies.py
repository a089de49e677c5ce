"""The run config's ``strategy``: a built-in method, or the user's own Flower Strategy by import path.

Built-in strategies (``rabo_protocol.presets``: who trains what, with which local estimator) all
run through :class:`ResourceAdaptiveBilevel`; ``algorithm`` (rabo | rafbo) applies to all of them.

A plug-in ``package.module:ClassName`` (``flwr:Name`` for Flower's own, e.g. ``flwr:FedProx``) must
name a subclass of Flower's ``flwr.serverapp.strategy.Strategy``. It is built with
``ClassName.from_run_config(cfg, task)`` when the class defines that classmethod, else with
``ClassName(**keys)``, ``keys`` the run config's values of ``PLUGIN_KEYS`` that it takes. It
receives the global arrays (keys ``x:<param>``, ``y:<param>``, ``v:<param>``) and must return
arrays with the same keys (our ClientApp replies with the full model when a message carries no
widths), as FedAvg does.
Its train replies are checked first (:class:`server_app.validation.ValidatedReplies`); a plug-in that
defines ``state()`` and ``load_state(state)`` (:class:`rabo_strategy.contract.Stateful`) has its state
checkpointed and resumed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping

import numpy as np
import torch
from flwr.serverapp.strategy import Strategy

from rabo_protocol import ConfigError, RunConfig
from rabo_protocol.wire import task_shape_config, widths_config
from rabo_strategy import NodeProfile, ResourceAdaptiveBilevel
from rabo_strategy.contract import ServerFacing
from rabo_strategy.node_eval import Statistics
from tasks import BilevelTask, image_data, root_set

from .reference import ServerReference
from .validation import ValidatedReplies

FLOWER_STRATEGIES = "flwr.serverapp.strategy"
"""``strategy='flwr:Name'`` is short for ``'flwr.serverapp.strategy:Name'`` (FedAvg, FedProx, ...)."""
PLUGIN_KEYS = ("fraction_train", "min_train_nodes", "min_available_nodes", "proximal_mu")
"""Run-config keys passed to a plug-in's constructor when it takes them (and has no
``from_run_config``): Flower's strategies all take the sampling keys, FedProx its mu."""


def load_plugin(path: str) -> type[Strategy]:
    """The Strategy class at ``package.module:ClassName``; ConfigError naming what went wrong."""
    module_name, _, class_name = path.partition(":")
    if module_name == "flwr":
        module_name = FLOWER_STRATEGIES
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see, in one line
        raise ConfigError(f"invalid run config: 'strategy' = {path!r}: cannot import module "
                          f"'{module_name}' ({type(err).__name__}: {err})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"invalid run config: 'strategy' = {path!r}: module '{module_name}' has no "
                          f"attribute '{class_name}'")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"invalid run config: 'strategy' = {path!r}: '{class_name}' is not a Flower "
                          "Strategy (a subclass of flwr.serverapp.strategy.Strategy)")
    return cls


def server_reference(cfg: RunConfig, task: BilevelTask, device: torch.device) -> ServerReference | None:
    """The server's root-set update on ``device`` (``screen-reference`` 'server' or 'both'; None for
    'peers' and for plug-ins, which have no agreement screen); ConfigError for a bad ``root-size``."""
    if cfg.screen_reference == "peers" or cfg.is_plugin:
        return None
    try:
        root = root_set(cfg.data_spec(num_partitions=1), cfg.root_size)
    except ValueError as err:
        raise ConfigError(f"invalid run config: 'root-size' = {cfg.root_size}: {err}") from None
    return ServerReference(task, cfg, root, device)


def build_strategy(cfg: RunConfig, task: BilevelTask, statistics: Statistics | None = None,
                   device: torch.device | None = None) -> ServerFacing:
    """The Strategy of ``cfg.strategy`` for ``task``, as the server runs it (a plug-in wrapped in
    :class:`ValidatedReplies`); a built-in one sends ``statistics`` of each submodel with the nodes'
    evaluate messages when ``norm-stats='recalibrate'``, and trains the screen's reference on
    ``device`` (default: the CPU; ``screen-reference``)."""
    norm = image_data(cfg.data_spec(num_partitions=1)).normalization
    client_config = task_shape_config(task.in_shape, task.num_classes, norm.mean, norm.std)
    if cfg.is_plugin:
        cls = load_plugin(cfg.strategy)
        factory = getattr(cls, "from_run_config", None)
        try:
            accepted = inspect.signature(cls).parameters
            kwargs = {key: getattr(cfg, key) for key in PLUGIN_KEYS if key in accepted}
            plugin = factory(cfg, task) if callable(factory) else cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"invalid run config: 'strategy' = {cfg.strategy!r} cannot be built with "
                              f"no arguments ({err}); give the class a classmethod "
                              "from_run_config(cfg, task)") from None
        # Flower's sampling waits for max(min-available-nodes, min-train-nodes) nodes, forever
        needs = max(("min-available-nodes", cfg.min_available_nodes),
                    ("min-train-nodes", cfg.min_train_nodes if "min_train_nodes" in kwargs else 0),
                    key=lambda item: item[1])
        # the built-in strategy's reply checks, for the plug-in too (server_app/validation.py)
        return ValidatedReplies(plugin, cfg.max_update_norm,
                                {**client_config, **widths_config(task.full_widths())},
                                min_nodes=needs, wait_timeout=cfg.round_timeout)

    def sample_coords_of(profile: NodeProfile) -> Mapping[str, np.ndarray]:
        if not task.sample_params:
            return {}
        if profile.partition_id is None or profile.num_partitions is None:
            raise ValueError(f"node {profile.node_id} has no partition-id/num-partitions: task "
                             f"'{cfg.task}' has per-sample parameters and needs partitioned data")
        return task.sample_coords(profile.partition_id, profile.num_partitions)

    return ResourceAdaptiveBilevel(task.structure, cfg, sample_coords_of=sample_coords_of,
                                   client_config=client_config,
                                   statistics=statistics if cfg.norm_stats == "recalibrate" else None,
                                   server_update=server_reference(cfg, task, device or torch.device("cpu")))
