"""The ClientApp: answers profile queries and runs local bilevel rounds on its submodel."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from rabo_protocol import ConfigError, NodeConfig, RunConfig, parse_node_config, parse_run_config
from rabo_protocol.device import resolve_device
from rabo_protocol.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    PROFILE,
    Profile,
    encode_profile,
    encode_profile_error,
    pack,
    task_shape_from_config,
    unpack,
    widths_from_config,
)
from tasks import (
    Batch,
    BilevelTask,
    ClientData,
    Normalization,
    build_task,
    client_data,
    device_data,
    holdout_set,
    train_coordinates,
)
from tasks.network import running_statistics, with_statistics

from .budget import available_memory_bytes, fit_ratio
from .local import local_round
from .privacy import sliced_dp_mod
from .timing import after_round, deadline_ratio, deadline_steps, message_lead, node_device, startup_seconds

app = ClientApp(mods=[sliced_dp_mod])  # dp-clip: client_app/privacy.py


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition, train examples and resource ratio (none: the server assigns one).

    The ratio is the node config's ``resource-ratio``, or the largest ratio whose measured
    memory fits ``memory-mb`` (or, with ``resource-ratio=auto``, the memory available now).

    An invalid node config is reported as ``error`` (the server leaves the node out and logs
    the message) rather than as a traceback.
    """
    startup = startup_seconds()
    try:
        node = parse_node_config(context.node_config)
        # load and check the data now: a missing, malformed or unusable dataset (or a node with
        # neither data-path nor partition) is reported here and the node left out, not sampled to
        # fail every round
        cfg = parse_run_config(context.run_config)
        config = msg.content[CONFIG]
        task = _task(cfg, config)
        if node.data_path and task.sample_params:
            raise ValueError(f"task '{cfg.task}' learns one weight per sample of the run's dataset "
                             "partitions: it cannot train on a node's own data-path")
        data = local_data(cfg, node, config)
        check_data(data, task.in_shape, task.num_classes)
        device = node_device(cfg, node)
        profile = Profile(partition_id=node.partition_id, num_partitions=node.num_partitions,
                          num_examples=len(data.train),  # which bounds its train replies' num-examples
                          device_class=device.name if device else None)
        if isinstance(node.resource_ratio, float):
            profile = replace(profile, resource_ratio=node.resource_ratio)
        elif node.resource_ratio == "auto" or node.memory_mb is not None:
            budget = (int(node.memory_mb * 2**20) if node.memory_mb is not None
                      else available_memory_bytes(cfg))
            ratio, _ = fit_ratio(task, data, cfg, budget)
            profile = replace(profile, resource_ratio=ratio,
                              ratio_source="memory-mb" if node.memory_mb is not None else "auto")
        if cfg.capacity == "deadline":  # the largest level predicted to meet round-deadline
            ratio = deadline_ratio(task, data, cfg, device, profile.resource_ratio or 1.0, context.state,
                                   startup)
            profile = replace(profile, resource_ratio=ratio, ratio_source="deadline")
    except (ConfigError, ValueError, FileNotFoundError) as err:
        return Message(RecordDict({PROFILE: encode_profile_error(str(err))}), reply_to=msg)
    return Message(RecordDict({PROFILE: encode_profile(profile)}), reply_to=msg)


def check_data(data: ClientData, in_shape: tuple[int, ...], num_classes: int) -> None:
    """Raise ValueError naming what makes a node's data unusable for the run's model."""
    for split, batch in (("train", data.train), ("val", data.val)):
        inputs, labels = batch.inputs, batch.labels
        if len(labels) == 0:
            raise ValueError(f"the node's {split} split is empty")
        if tuple(inputs.shape[1:]) != tuple(in_shape):
            raise ValueError(f"{split} inputs have shape {list(inputs.shape[1:])}, the model takes "
                             f"{list(in_shape)}")
        if not torch.isfinite(inputs).all():
            raise ValueError(f"{split} inputs contain NaN or Inf")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{split} labels span [{int(labels.min())}, {int(labels.max())}], the "
                             f"model has classes 0..{num_classes - 1}")
    if bool((data.train.inputs == data.train.inputs.flatten()[0]).all()):
        raise ValueError("train inputs are constant: nothing to learn from")


def _inject_failure(cfg: RunConfig, server_round: int, partition_id: int) -> None:
    """Chaos testing: fail with probability ``client-failure-rate`` (seeded per round, client)."""
    if cfg.client_failure_rate > 0.0:
        draw = np.random.default_rng([cfg.seed, server_round, partition_id, 7]).random()
        if draw < cfg.client_failure_rate:
            raise RuntimeError(f"injected failure (client-failure-rate={cfg.client_failure_rate})")


def local_data(cfg: RunConfig, node: NodeConfig, config: ConfigRecord) -> ClientData:
    """The node's own file (``data-path``), standardised like the run's dataset (the server sends
    ``input-mean``/``input-std``), or its partition of the run's dataset."""
    if node.data_path:
        if "input-mean" not in config or "input-std" not in config:
            raise ValueError("the message lacks input-mean and input-std, the standardisation of the "
                             "run's dataset that the server sends")
        norm = Normalization(float(config["input-mean"]), float(config["input-std"]))  # type: ignore[arg-type]
        if not (math.isfinite(norm.mean) and math.isfinite(norm.std) and norm.std > 0):
            raise ValueError(f"input-mean={norm.mean}, input-std={norm.std}: not a standardisation")
        return device_data(node.data_path, cfg.val_fraction, cfg.seed, node.partition_id,
                           node.num_partitions, normalization=norm)
    partition_id, num_partitions = node.partition()
    return client_data(cfg.data_spec(num_partitions), partition_id)


def node_test_data(cfg: RunConfig, node: NodeConfig, data: ClientData) -> Batch:
    """What a node evaluates on. A partition of the run's dataset: the run's held-out test samples
    of the classes its train split holds (HeteroFL's and FedRolex's "local" accuracy: the node's
    label distribution, on data no client trained on). A node's own ``data-path``: its
    validation split (the outer problem's data, held out from the inner one only)."""
    if node.data_path:
        return data.val
    test = holdout_set(cfg.data_spec(node.partition()[1]))
    keep = torch.isin(test.labels, torch.unique(data.train.labels))
    return Batch(test.inputs[keep], test.labels[keep])


def _task(cfg: RunConfig, config: ConfigRecord) -> BilevelTask:
    """The task at the input shape and classes the server sent."""
    return build_task(cfg.task, *task_shape_from_config(config), cfg.mu, **cfg.task_options())


def _own_coordinates(task: BilevelTask, cfg: RunConfig, node: NodeConfig,
                     parts: dict[str, dict[str, np.ndarray]], num_train: int) -> np.ndarray | None:
    """This node's coordinates of the per-sample parameters, when the message holds all of them.

    Built-in strategies send each node only its own samples' weights; a plug-in strategy that
    knows nothing of ownership (FedAvg) sends the global vector.
    """
    if not any(parts["x"][name].shape[0] != num_train for name in task.sample_params):
        return None
    partition_id, num_partitions = node.partition()
    return train_coordinates(cfg.data_spec(num_partitions), partition_id)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Rebuild the submodel at the received widths, run the local solver, return the slices."""
    start, startup = time.perf_counter(), startup_seconds()
    cfg = parse_run_config(context.run_config)
    node = parse_node_config(context.node_config)
    device = node_device(cfg, node)  # None: the real clock
    lead = message_lead(cfg, device, msg.metadata.created_at, startup)  # None: not measured
    client_key = context.node_id if node.partition_id is None else node.partition_id
    config = msg.content[CONFIG]
    _inject_failure(cfg, int(config["server-round"]), client_key)
    data = local_data(cfg, node, config)
    task = _task(cfg, config)
    shape = tuple(data.train.inputs.shape[1:])
    if shape != task.in_shape:
        raise ValueError(f"the node's images have shape {shape}, the run's dataset "
                         f"'{cfg.dataset}' has {task.in_shape}")
    parts = unpack(msg.content[ARRAYS])
    own = _own_coordinates(task, cfg, node, parts, len(data.train))
    if own is not None:  # a plug-in strategy sent every sample's weight: train on this node's own
        full_x = parts["x"]
        parts = {**parts, "x": {k: (t[own] if k in task.sample_params else t) for k, t in full_x.items()}}
    widths = widths_from_config(config)
    if missing := [name for name in task.full_widths() if name not in widths]:
        raise ValueError(f"the train message lacks the widths of groups {missing} (width.<group>, "
                         "which the server sends with every train message)")
    ratio = float(config.get("resource-ratio", 0.0))  # type: ignore[arg-type]
    reply, metrics = local_round(
        task, data, cfg, widths, parts, server_round=int(config["server-round"]), partition_id=client_key,
        proximal_mu=_proximal_mu(config), count_flops=device is not None,
        outer_steps=deadline_steps(cfg, context.state, ratio, lead))
    if own is not None:  # ... and return them in place, the other samples' weights unchanged
        for name in task.sample_params:
            merged = full_x[name].copy()
            merged[own] = reply["x"][name].detach().cpu().numpy()
            reply["x"][name] = torch.as_tensor(merged)
    metrics["partition-id"] = -1 if node.partition_id is None else node.partition_id
    if cfg.capacity == "deadline":
        metrics.update(after_round(cfg, device, context.state, ratio,
                                   metrics, time.perf_counter() - start, startup if lead is None else lead))
    content = RecordDict({ARRAYS: pack(reply), METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _proximal_mu(config: ConfigRecord) -> float:
    """FedProx's ``proximal-mu`` (sent by ``flwr.serverapp.strategy.FedProx``), else 0."""
    mu = config.get("proximal-mu", 0.0)
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0.0 <= mu < float("inf"):
        raise ValueError(f"proximal-mu={mu!r} is not a finite number >= 0")
    return float(mu)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluation on the node: the received model on this node's test data (:func:`node_test_data`).
    The built-in
    strategies send the submodel the node deploys (its widths in the message, ``node-eval-every``);
    a message without widths (Flower's FedAvg and the like) holds the full model. BatchNorm
    statistics (``norm-stats``): those sent with the model (part s, ``recalibrate``), else with
    ``local`` the node's own, computed on its train inputs, else batch statistics. Replies
    ``eval-loss`` (the outer loss f_i, the objective the bilevel problem minimises),
    ``eval-accuracy`` and ``num-examples``."""
    cfg = parse_run_config(context.run_config)
    node = parse_node_config(context.node_config)
    config = msg.content.config_records.get(CONFIG, ConfigRecord())
    data = local_data(cfg, node, config)
    task = _task(cfg, config)
    parts = unpack(msg.content[ARRAYS])
    device = resolve_device(cfg.device)
    x, y = ({k: torch.as_tensor(np.asarray(t), device=device) for k, t in parts[p].items()}
            for p in ("x", "y"))
    widths = widths_from_config(config) or task.full_widths()
    model = task.build_model(widths).to(device)
    if "s" in parts:
        model = with_statistics(model, {k: torch.as_tensor(t) for k, t in parts["s"].items()})
    elif cfg.norm_stats == "local":
        model = with_statistics(model, running_statistics(model, {**x, **y}, data.train.inputs.to(device)))
    batch = node_test_data(cfg, node, data).to(device)
    with torch.no_grad():
        loss = float(task.outer_loss(model, x, y, batch))
    metrics = {"num-examples": len(batch), "eval-loss": loss,
               "eval-accuracy": float(task.accuracy(model, x, y, batch))}
    return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)
