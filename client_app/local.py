"""A client's local round: rebuild the dense submodel, run the bilevel solver, report costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from bilevel import make_estimator, rabo_local, rafbo_local
from rabo_protocol import RunConfig
from rabo_protocol.device import resolve_device
from rabo_protocol.presets import DIRECTION_PART, LOCAL_OUTER_STEPS
from rabo_pruning import NESTED_POLICIES
from tasks import BilevelTask, ClientData, OutputScaler, Params, bilevel_problem, class_counts, logit_offsets
from tasks.sampling import MinibatchSampler, seeded_generator

from .nested import OrderedDropout
from .profiling import measure


def _tensors(arrays: Mapping[str, np.ndarray], device: torch.device) -> Params:
    return {k: torch.as_tensor(np.array(a, dtype=np.float32), device=device) for k, a in arrays.items()}


def with_label_prior(data: ClientData, num_classes: int, cfg: RunConfig) -> ClientData:
    """``data`` whose batches carry the client's label prior as logit offsets (``tasks.class_prior``:
    ``absent-class-weight``, ``logit-adjustment``), counted over its train and validation labels
    together (both losses see both); ``data`` itself for plain cross-entropy."""
    counts = class_counts(torch.cat([data.train.labels, data.val.labels]), num_classes)
    offset = logit_offsets(counts, cfg.absent_class_weight, cfg.logit_adjustment)
    if offset is None:
        return data
    return ClientData(train=replace(data.train, logit_offset=offset),
                      val=replace(data.val, logit_offset=offset))


def round_steps(cfg: RunConfig) -> int:
    """Steps of one local round: per outer step, the inner steps and the estimator's own."""
    solver = cfg.solver_config()
    return solver.outer_steps * (solver.inner_steps + make_estimator(cfg.estimator, cfg).own_steps(solver))


def local_round(
    task: BilevelTask, data: ClientData, cfg: RunConfig, widths: Mapping[str, int],
    parts: Mapping[str, Mapping[str, np.ndarray]], *, server_round: int, partition_id: int,
    proximal_mu: float = 0.0, count_flops: bool = False, outer_steps: int | None = None,
) -> tuple[dict[str, Params], dict[str, float | list[int]]]:
    """Run RABO or RAFBO locally on the received slices.

    Returns the reply parts ((h, y, v) for RABO, (x, y, v) for RAFBO) and the metrics. FLOPs are
    counted with ``profile``, or with ``count_flops`` alone: the virtual clock times a round by them.
    ``outer_steps``: run only this many of the round's outer steps (``deadline-steps='fit'``), at
    the schedules' positions of the round's first ones.
    """
    device = resolve_device(cfg.device)
    model = task.build_model(widths).to(device)
    if cfg.scaler:
        OutputScaler(model, task.structure, widths)
    num_classes = task.num_classes
    data = with_label_prior(data, num_classes, cfg)
    x, y, v = (_tensors(parts[p], device) for p in ("x", "y", "v"))
    problem = bilevel_problem(task, model)
    solver = cfg.solver_config(proximal_mu)
    first_step = (server_round - 1) * solver.outer_steps
    if outer_steps is not None:
        solver = replace(solver, outer_steps=min(outer_steps, solver.outer_steps))
    next_train = MinibatchSampler(data.train, cfg.batch_size,
                                  seeded_generator(cfg.seed, server_round, partition_id, 0), device)
    next_val = MinibatchSampler(data.val, cfg.batch_size,
                                seeded_generator(cfg.seed, server_round, partition_id, 1), device)
    run = rafbo_local if LOCAL_OUTER_STEPS[cfg.algorithm] else rabo_local
    estimator = make_estimator(cfg.estimator, cfg)
    if cfg.mask_policy in NESTED_POLICIES:
        estimator = OrderedDropout(estimator, task, model, widths, cfg.ratio_levels,
                                   (cfg.seed, server_round, partition_id), cfg.distill_weight,
                                   None if cfg.own_width_share == "uniform" else cfg.own_width_share)
    memory = cfg.profile and cfg.profile_memory
    count = cfg.profile or count_flops
    with measure(device, flops=count, memory=memory) as cost:
        result = run(problem, estimator, solver, x, y, v, next_train, next_val, first_step=first_step)

    steps = solver.outer_steps * (solver.inner_steps + estimator.own_steps(solver))  # flops-per-step's
    metrics = {
        "num-examples": len(data.train),
        "train-seconds": cost.seconds,
        "params-x": sum(t.numel() for t in x.values()),
        "params-y": sum(t.numel() for t in y.values()),
        "steps": steps,
        **result.metrics,
    }
    if count:
        metrics.update({"flops": cost.flops, "flops-per-step": cost.flops / max(steps, 1)})
    if memory:
        metrics["peak-memory-mb"] = cost.peak_bytes / 2**20
    if cfg.head_rows != "covered":  # the server weights each class's head row by these
        metrics["class-counts"] = class_counts(data.train.labels, num_classes).tolist()
    direction = DIRECTION_PART[cfg.algorithm]
    first = result.h if direction == "h" else result.x
    assert first is not None
    return {direction: first, "y": result.y, "v": result.v}, metrics
