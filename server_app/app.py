"""The ServerApp: validate the config, build task and strategy, run, write results."""

from __future__ import annotations

from logging import ERROR, INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from client_app.local import resolve_device
from rabo_strategy import ResourceAdaptiveBilevel, make_mask_policy
from rabo_strategy.wire import pack, unpack
from tasks import BilevelTask, holdout_set, image_data, make_task, split_params

from .config import ConfigError, RunConfig, parse_run_config
from .evaluation import Evaluator
from .results import make_run_dir, save_model, write_results

app = ServerApp()


class RunStopped(RuntimeError):
    """The run cannot start: bad configuration or missing data (the message says which)."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        cfg = parse_run_config(context.run_config)
        image_data(cfg.data_spec(num_partitions=1))  # missing data fails here, before any round
    except (ConfigError, FileNotFoundError) as err:
        log(ERROR, "Run stopped: %s", err)
        # An exception (not SystemExit, which Flower records as "completed") marks the run as
        # finished:failed, with this message as the run's status details.
        raise RunStopped(str(err)) from None
    run(grid, cfg)


def initial_arrays(cfg: RunConfig) -> tuple[ArrayRecord, BilevelTask]:
    """The seeded full model as (x, y, v = 0) and the task."""
    task = make_task(cfg.task, cfg.data_spec(num_partitions=1), cfg.mu)
    torch.manual_seed(cfg.seed)
    x, y = split_params(task.build_model(task.full_widths()), task.layers)
    return pack({"x": x, "y": y, "v": {k: torch.zeros_like(t) for k, t in y.items()}}), task


def run(grid: Grid, cfg: RunConfig) -> Path:
    """Run ``cfg`` on ``grid``; returns the results directory."""
    arrays, task = initial_arrays(cfg)
    strategy = ResourceAdaptiveBilevel(
        task.layers, cfg.algorithm, cfg.ratio_levels, make_mask_policy(cfg.mask_policy, cfg.seed),
        outer_lr=cfg.outer_lr, outer_momentum=cfg.outer_momentum, fraction_train=cfg.fraction_train,
        min_train_nodes=cfg.min_train_nodes, min_available_nodes=cfg.min_available_nodes,
        seed=cfg.seed, min_successful_replies=cfg.min_successful_replies,
        max_update_norm=cfg.max_update_norm,
    )
    device = resolve_device(cfg.device)
    evaluator = Evaluator(task, holdout_set(cfg.data_spec(num_partitions=1)), device, cfg.num_server_rounds)
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=cfg.num_server_rounds,
                            timeout=cfg.round_timeout, evaluate_fn=evaluator)

    rows = []
    for rnd in range(cfg.num_server_rounds + 1):
        row: dict[str, float | int] = {"round": rnd, "elapsed-seconds": evaluator.elapsed.get(rnd, 0.0)}
        row.update(dict(result.evaluate_metrics_serverapp.get(rnd, {})))
        row.update(dict(result.train_metrics_clientapp.get(rnd, {})))
        rows.append(row)
    name = f"{cfg.algorithm}-{cfg.hypergradient}-{cfg.mask_policy}-seed{cfg.seed}"
    run_dir = make_run_dir(cfg.results_dir, name)
    nodes = [vars(p) for p in sorted(strategy.profiles.values(), key=lambda p: p.node_id)]
    summary = write_results(run_dir, config=cfg.to_flat(), rows=rows,
                            client_rows=strategy.client_records, nodes=nodes, title=name)
    final = unpack(result.arrays) if result.arrays else unpack(arrays)
    save_model(run_dir / "model.pt", final, task.full_widths(), cfg.to_flat())
    log(INFO, "final test accuracy %.4f; rounds to 90%%: %s", summary["final-test-accuracy"],
        summary["rounds-to-90%"])
    log(INFO, "Results written to %s", run_dir)
    return run_dir
