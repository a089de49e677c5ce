"""The ServerApp: validate the config, build task and strategy, run, write results."""

from __future__ import annotations

import time
from contextlib import ExitStack
from logging import ERROR, INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from rabo_protocol import PRESETS, ConfigError, RunConfig, parse_run_config
from rabo_protocol.device import resolve_device
from rabo_protocol.wire import pack, unpack
from rabo_strategy.contract import ServerFacing
from rabo_strategy.node_sampling import TooFewNodes
from tasks import BilevelTask, holdout_set, image_data, make_task

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    check_parts,
    check_state,
    load_checkpoint,
    save_checkpoint,
)
from .evaluation import Evaluator
from .lock import RunLocked, run_lock
from .loop import IdleRun, Row, run_rounds
from .metering import MeteredGrid
from .results import make_run_dir, save_model, write_json, write_results
from .strategies import build_strategy
from .trackers import PACKAGES, Trackers, missing_packages

app = ServerApp()


class RunStopped(RuntimeError):
    """The run cannot start (bad configuration, missing data, an unusable checkpoint, a run
    directory in use) or cannot go on (too few nodes, ``max-idle-rounds`` idle rounds)."""


STOPS = (ConfigError, CheckpointError, FileNotFoundError, RunLocked, TooFewNodes, IdleRun)
"""What ends a run with one message (``Run stopped: ...``) instead of a traceback."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        cfg = parse_run_config(context.run_config)
        image_data(cfg.data_spec(num_partitions=1))  # missing data fails here, before any round
        run(grid, cfg)
    except STOPS as err:
        log(ERROR, "Run stopped: %s", err)
        # An exception (not SystemExit, which Flower records as "completed") marks the run as
        # finished:failed, with this message as the run's status details.
        raise RunStopped(str(err)) from None


def initial_arrays(cfg: RunConfig) -> tuple[ArrayRecord, BilevelTask]:
    """The seeded full model as (x, y, v = 0) and the task."""
    try:  # a plug-in task that does not import, a network whose channels cannot be pruned
        task = make_task(cfg.task, cfg.data_spec(num_partitions=1), cfg.mu, **cfg.task_options())
        widths = task.full_widths()
    except ValueError as err:
        raise ConfigError(f"invalid run config: 'task' = {cfg.task!r}: {err}") from None
    torch.manual_seed(cfg.seed)
    x, y = task.init_params(widths, task.num_samples)
    return pack({"x": x, "y": y, "v": {k: torch.zeros_like(t) for k, t in y.items()}}), task


def run(grid: Grid, cfg: RunConfig) -> Path:
    """Run ``cfg`` on ``grid`` (or resume the run in ``resume-from``); returns the results directory."""
    arrays, task = initial_arrays(cfg)
    grid = MeteredGrid(grid)
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as err:
        raise ConfigError(f"invalid run config: 'device' = {cfg.device!r}: {err} (the server); "
                          "use device='auto' or 'cpu'") from None
    evaluate = Evaluator(task, holdout_set(cfg.data_spec(num_partitions=1)), device, cfg.ratio_levels)
    strategy = build_strategy(cfg, task, evaluate.statistics, device)
    name = cfg.run_name
    config = {**cfg.to_flat(), "estimator": cfg.estimator}
    if cfg.describe_defaults():
        log(INFO, "%s", cfg.describe_defaults())
    client_rows: list[Row] = []
    log(INFO, "Strategy %s (%s), local estimator %s", cfg.strategy, type(strategy).__name__,
        cfg.estimator)
    with ExitStack() as held:  # the run directory's lock, released however the run ends
        if cfg.resume_from:
            run_dir = Path(cfg.resume_from).expanduser().resolve()
            if run_dir.is_dir():  # else load_checkpoint says there is no checkpoint there
                held.enter_context(run_lock(run_dir))
            arrays, rows, client_rows = _resume(run_dir, cfg, config, strategy, arrays)
        else:
            try:
                run_dir = make_run_dir(cfg.results_dir, name)
            except OSError as err:
                reason = f"{type(err).__name__}: {err.strerror or err}"
                raise ConfigError(f"invalid run config: 'results-dir' = {cfg.results_dir!r}: cannot "
                                  f"create the run directory there ({reason})") from None
            held.enter_context(run_lock(run_dir))
            rows = [{"round": 0, "elapsed-seconds": 0.0, **dict(evaluate(0, arrays))}]
            log(INFO, "round 0 (initial model): test accuracy %.4f", rows[0]["test-accuracy"])
        _run_in(run_dir, cfg, strategy, grid, arrays, rows, client_rows, evaluate, task)
    return run_dir


def _resume(run_dir: Path, cfg: RunConfig, config: dict[str, object], strategy: ServerFacing,
            arrays: ArrayRecord) -> tuple[ArrayRecord, list[Row], list[Row]]:
    """The checkpoint in ``run_dir``, every field checked against the run (CheckpointError naming
    the field) and loaded into ``strategy``, before any node is contacted: (arrays, rows, client rows)."""
    checkpoint = load_checkpoint(run_dir, config)
    check_parts(run_dir, checkpoint.parts, unpack(arrays))
    if not cfg.is_plugin:
        check_state(run_dir, checkpoint.strategy_state, unpack(arrays)["x"])
    try:
        strategy.load_state(checkpoint.strategy_state)
    except Exception as err:  # noqa: BLE001 - a plug-in's own state: any failure is one message
        raise CheckpointError(f"resume-from='{run_dir}': the strategy cannot load the checkpoint's "
                              f"strategy_state ({type(err).__name__}: {err})") from None
    log(INFO, "Resuming %s after round %d", run_dir, checkpoint.round)
    return pack(checkpoint.parts), checkpoint.rows, checkpoint.client_rows


def _run_in(run_dir: Path, cfg: RunConfig, strategy: ServerFacing, grid: MeteredGrid, arrays: ArrayRecord,
            rows: list[Row], client_rows: list[Row], evaluate: Evaluator, task: BilevelTask) -> None:
    """The rounds after ``rows[-1]``, checkpointed after each, then the results. A run stopped for
    too few nodes or too many idle rounds (``STOPS``) writes its results first, then re-raises."""
    name = cfg.run_name
    config = {**cfg.to_flat(), "estimator": cfg.estimator}
    write_json(run_dir / "config.json", {**config, "sources": cfg.sources})
    if missing := missing_packages(cfg.loggers):
        raise ConfigError(f"invalid run config: 'loggers' = {', '.join(cfg.loggers)!r}: "
                          f"{', '.join(missing)} not installed on the server (pip install "
                          f"{' '.join(PACKAGES[m] for m in missing)})")
    trackers = Trackers(cfg.loggers, run_dir, name, config)
    first_round, offset = int(rows[-1]["round"]) + 1, float(rows[-1]["elapsed-seconds"])
    start = time.perf_counter()

    def on_round_end(rnd: int, new_arrays: ArrayRecord, row: Row, clients: list[Row]) -> None:
        nonlocal arrays
        arrays = new_arrays
        rows.append({**row, "elapsed-seconds": offset + time.perf_counter() - start})
        client_rows.extend(clients)
        trackers.log_round(rnd, rows[-1])
        save_checkpoint(run_dir, Checkpoint(rnd, unpack(new_arrays), strategy.state(), rows, config,
                                            client_rows))
        spent = time.perf_counter() - start  # this process's rounds (a resumed run's first too)
        left = spent / (rnd - first_round + 1) * (cfg.num_server_rounds - rnd)
        log(INFO, "round %d/%d: test accuracy %.4f, C_x* %s, C_y* %s, failed replies %s, %.1f s, "
            "about %.0f s left", rnd, cfg.num_server_rounds, row["test-accuracy"],
            row.get("coverage-x-min"), row.get("coverage-y-min"), row.get("failed-replies"),
            rows[-1]["elapsed-seconds"], left)

    # The directory up front: a run cut short (a SuperLink restart) is resumed from it (resume-from).
    log(INFO, "Starting %s: rounds %d-%d, checkpoints in %s", name, first_round, cfg.num_server_rounds,
        run_dir)
    if first_round == 1:
        trackers.log_round(0, rows[0])
    sizing = PRESETS[cfg.strategy].sizing if cfg.strategy in PRESETS else None
    stopped: Exception | None = None
    try:
        run_rounds(strategy, grid, arrays, range(first_round, cfg.num_server_rounds + 1),
                   timeout=cfg.round_timeout, train_timeout=cfg.train_timeout(sizing), evaluate=evaluate,
                   on_round_end=on_round_end, max_idle_rounds=cfg.max_idle_rounds)
    except (TooFewNodes, IdleRun) as err:
        stopped = err
    finally:
        trackers.close()

    nodes = [vars(p) for p in sorted(strategy.profiles.values(), key=lambda p: p.node_id)]
    summary = write_results(run_dir, rows=rows, client_rows=client_rows, nodes=nodes, title=name,
                            fab_hash=grid.run.fab_hash,
                            node_eval_rows=strategy.node_eval_rows)
    save_model(run_dir / "model.pt", unpack(arrays), task.full_widths(), config)
    log(INFO, "final test accuracy %.4f; rounds to 90%%: %s", summary["final-test-accuracy"],
        summary["rounds-to-90%"])
    log(INFO, "Results written to %s", run_dir)
    if stopped is not None:
        raise stopped
