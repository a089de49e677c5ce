"""A client's local round: rebuild the dense submodel, run the bilevel solver, report costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from bilevel import EstimatorConfig, SolverConfig, make_estimator, rabo_local, rafbo_local
from rabo_protocol.config import RunConfig
from rabo_protocol.device import resolve_device
from tasks import BilevelTask, ClientData, OutputScaler, Params, bilevel_problem, held_classes

from .profiling import measure
from .sampling import MinibatchSampler, seeded_generator


def _tensors(arrays: Mapping[str, np.ndarray], device: torch.device) -> Params:
    return {k: torch.as_tensor(np.array(a, dtype=np.float32), device=device) for k, a in arrays.items()}


def with_held_classes(data: ClientData, num_classes: int) -> ClientData:
    """``data`` whose batches carry the mask of the classes the client holds (train and validation
    labels together), so that its losses are the masked cross-entropy."""
    mask = held_classes(torch.cat([data.train.labels, data.val.labels]), num_classes)
    return ClientData(train=replace(data.train, label_mask=mask), val=replace(data.val, label_mask=mask))


def local_round(
    task: BilevelTask, data: ClientData, cfg: RunConfig, widths: Mapping[str, int],
    parts: Mapping[str, Mapping[str, np.ndarray]], *, server_round: int, partition_id: int,
    proximal_mu: float = 0.0,
) -> tuple[dict[str, Params], dict[str, float | list[int]]]:
    """Run RABO or RAFBO locally on the received slices.

    Returns the reply parts ((h, y, v) for RABO, (x, y, v) for RAFBO) and the metrics.
    """
    device = resolve_device(cfg.device)
    model = task.build_model(widths).to(device)
    if cfg.scaler:
        OutputScaler(model, task.layers, widths)
    if cfg.masked_loss:
        data = with_held_classes(data, task.layers[-1].width)
    x, y, v = (_tensors(parts[p], device) for p in ("x", "y", "v"))
    problem = bilevel_problem(task, model)
    solver = SolverConfig(
        inner_steps=cfg.inner_steps, v_steps=cfg.v_steps,
        outer_steps=cfg.outer_steps if cfg.algorithm == "rafbo" else 1,
        inner_lr=cfg.inner_lr, v_lr=cfg.v_lr, outer_lr=cfg.outer_lr, step_guard=cfg.step_guard,
        proximal_mu=proximal_mu,
    )
    next_train = MinibatchSampler(data.train, cfg.batch_size,
                                  seeded_generator(cfg.seed, server_round, partition_id, 0), device)
    next_val = MinibatchSampler(data.val, cfg.batch_size,
                                seeded_generator(cfg.seed, server_round, partition_id, 1), device)
    run = rabo_local if cfg.algorithm == "rabo" else rafbo_local
    estimator = make_estimator(EstimatorConfig(
        name=cfg.estimator, fd_alpha=cfg.fd_alpha, fd_scheme=cfg.fd_scheme, v_solver=cfg.v_solver,
        v_batch=cfg.v_batch, neumann_steps=cfg.neumann_steps,
        f2sa_lambda=cfg.f2sa_lambda, f2sa_lambda_growth=cfg.f2sa_lambda_growth,
        f2sa_lambda_max=cfg.f2sa_lambda_max,
    ))
    memory = cfg.profile and cfg.profile_memory
    with measure(device, flops=cfg.profile, memory=memory) as cost:
        result = run(problem, estimator, solver, x, y, v, next_train, next_val,
                     first_step=(server_round - 1) * solver.outer_steps)

    # local steps of one outer iteration: inner steps, then the estimator's own (v or Neumann
    # terms, and the x-direction; F2SA steps v jointly with y); flops-per-step divides by these
    own = {"none": 0, "neumann": cfg.neumann_steps, "f2sa": 1}.get(cfg.estimator, solver.v_steps + 1)
    steps = solver.outer_steps * (solver.inner_steps + own)
    metrics = {
        "num-examples": len(data.train),
        "train-seconds": cost.seconds,
        "params-x": sum(t.numel() for t in x.values()),
        "params-y": sum(t.numel() for t in y.values()),
        **result.metrics,
    }
    if cfg.profile:
        metrics.update({"flops": cost.flops, "flops-per-step": cost.flops / max(steps, 1)})
    if memory:
        metrics["peak-memory-mb"] = cost.peak_bytes / 2**20
    if data.train.label_mask is not None:  # the server averages each class's head row over its holders
        metrics["held-classes"] = torch.nonzero(data.train.label_mask).flatten().tolist()
    first = result.h if cfg.algorithm == "rabo" else result.x
    assert first is not None
    reply = {"h" if cfg.algorithm == "rabo" else "x": first, "y": result.y, "v": result.v}
    return reply, metrics
