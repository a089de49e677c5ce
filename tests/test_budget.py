"""Ratios derived from a device's memory budget (node config memory-mb / resource-ratio=auto)."""

from __future__ import annotations

import json
from pathlib import Path

from client_app.app import app as client_app
from client_app.budget import CANDIDATE_RATIOS, peak_memory_bytes
from rabo_protocol import parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tasks import client_data, make_task
from tests.fakes import FAST_CONFIG


def test_memory_budget_picks_the_largest_ratio_that_fits(tmp_path: Path) -> None:
    config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 2}
    cfg = parse_run_config(config)
    spec = cfg.data_spec(4)
    task = make_task(cfg.task, spec, cfg.mu)
    peaks = {r: peak_memory_bytes(task, client_data(spec, 0), cfg, r) / 2**20 for r in CANDIDATE_RATIOS}
    assert peaks[1.0] > peaks[0.5] > peaks[0.25]  # the profile really shrinks with the ratio
    between = (peaks[0.5] + peaks[0.25]) / 2  # fits 1/4 but not 1/2
    node_configs = [{"memory-mb": between}, {"memory-mb": 10 * peaks[1.0]},
                    {"resource-ratio": "auto"}, {"memory-mb": peaks[0.0625] / 10}]
    run_dir = run(InProcessGrid(client_app, 4, config, node_configs=node_configs),
                  parse_run_config(config))
    nodes = json.loads((run_dir / "summary.json").read_text())["nodes"]
    assert [(n["partition_id"], n["ratio"], n["source"]) for n in nodes] == [
        (0, 0.25, "memory-mb"), (1, 1.0, "memory-mb"), (2, 1.0, "auto")]  # node 3 fits nothing
    clients = (run_dir / "clients.csv").read_text()
    assert clients.count(",0.25,") >= 2  # node 0 trained at 1/4 in both rounds


def test_auto_budgets_use_available_memory_not_free_pages() -> None:
    """`resource-ratio=auto` reads the available memory (free plus the page cache the kernel gives
    back, as psutil reports it), not the free pages of SC_AVPHYS_PAGES, which macOS lacks."""
    import psutil

    from client_app.budget import available_memory_bytes
    from rabo_protocol import parse_run_config

    measured = available_memory_bytes(parse_run_config({"device": "cpu"}))
    assert abs(measured - psutil.virtual_memory().available) < 256 * 2**20
