"""Every strategy on both tasks, plug-ins by import path, and bytes counted on serialized messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from client_app.app import app as client_app
from rabo_protocol import STRATEGIES, parse_run_config
from rabo_strategy import ServerFacing, Stateful
from server_app.app import RunStopped, main, run
from server_app.inprocess import InProcessGrid
from server_app.validation import ValidatedReplies
from tests.fakes import FAST_CONFIG, SMALL_DIGITS_TASK, built_in_strategy
from tests.toy_strategy import CountingAverage, NoArguments

TASK_CONFIG = {
    "hyper-representation": {},
    "hyper-cleaning": {"task": "hyper-cleaning", "label-noise": 0.5, "algorithm": "rafbo"},
}
RESULT_FILES = ("metrics.csv", "metrics.json", "clients.csv", "config.json", "versions.json",
                "summary.json", "plot.png", "model.pt")


def _run(tmp_path: Path, num_nodes: int = 8, **overrides: object) -> Path:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 2, **overrides}
    return run(InProcessGrid(client_app, num_nodes, run_config), parse_run_config(run_config))


def _clients(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "clients.csv").open() as handle:
        return list(csv.DictReader(handle))


TASKS = ("hyper-representation", "hyper-representation-mlp", "hyper-cleaning")


@pytest.mark.parametrize("algorithm", ["rabo", "rafbo"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_strategy_and_algorithm_works_on_its_defaults(
        tmp_path: Path, task: str, strategy: str, algorithm: str) -> None:
    """Defaults only (plus the label noise hyper-cleaning requires): 4 nodes, 3 rounds on sklearn
    digits. Every round has valid replies and none rejected, the model stays finite, and the test
    accuracy ends at least 20 points above chance (10 classes; the first rounds are noisy: RAFBO
    on the CNN went 37 % -> 20 % -> 66 %)."""
    run_config = {"dataset": "sklearn-digits", "num-server-rounds": 3, "profile": False,
                  "results-dir": str(tmp_path), "task": task, "strategy": strategy, "algorithm": algorithm,
                  **({"label-noise": 0.5} if task == "hyper-cleaning" else {})}
    run_dir = run(InProcessGrid(client_app, 4, run_config), parse_run_config(run_config))
    for name in RESULT_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    # 4 nodes on ratio levels 1, 1/2, 1/4, 1/8: one of them has ratio 1
    expected_replies = {"drop-weak": 1}.get(strategy, 4)
    assert all(r["replies"] == expected_replies and r["failed-replies"] == 0 for r in rows[1:])
    assert rows[-1]["test-accuracy"] >= 0.1 + 0.2, rows
    parts = torch.load(run_dir / "model.pt")["parts"]
    assert all(torch.isfinite(t).all() for part in parts.values() for t in part.values())
    clients = _clients(run_dir)
    ratios = {float(c["resource-ratio"]) for c in clients}
    assert ratios == ({0.125, 0.25, 0.5, 1.0} if strategy == "resource-adaptive" else {1.0})
    # bytes are measured per message; a round's total covers every client's traffic
    for row in rows[1:]:
        per_client = [c for c in clients if int(c["round"]) == row["round"]]
        assert row["bytes-down"] >= sum(int(c["bytes-down"]) for c in per_client) > 0
        assert row["bytes-up"] >= sum(int(c["bytes-up"]) for c in per_client) > 0
    config = json.loads((run_dir / "config.json").read_text())
    estimator = {"fednest-aid": "neumann", "f2sa": "f2sa"}.get(strategy, "finite-difference")
    assert config["estimator"] == estimator
    assert config["algorithm"] == algorithm and config["sources"]["algorithm"] == "user"
    if task == "hyper-cleaning":
        assert config["outer-lr"] == 100.0 and config["sources"]["outer-lr"] == "task default"
        assert {"detection-precision", "detection-recall", "detection-f1"} <= set(rows[-1])
        # x holds one weight per training sample, each owned by one client: covered once when
        # every client trains, and the samples of the idle clients are not covered at all
        covered = 1 if strategy != "drop-weak" else 0
        assert all(r["coverage-x-min"] == covered for r in rows[1:])
        assert all(0.2 < r["coverage-x-fraction"] <= 1.0 for r in rows[1:])


def test_small_submodels_send_fewer_bytes(tmp_path: Path) -> None:
    clients = _clients(_run(tmp_path, **{"num-server-rounds": 1}))
    by_ratio = {float(c["resource-ratio"]): (int(c["bytes-down"]), int(c["bytes-up"])) for c in clients}
    assert by_ratio[0.25][0] < 0.2 * by_ratio[1.0][0] and by_ratio[0.25][1] < 0.2 * by_ratio[1.0][1]


@pytest.mark.parametrize("task", list(TASK_CONFIG))
def test_plugin_strategy_by_import_path(tmp_path: Path, task: str) -> None:
    # label shards: the nodes hold different classes (their masked-loss class lists, which Flower's
    # metric averaging cannot take, stay out of the reply)
    skew = {"partitioner": "shards"} if task == "hyper-representation" else {}
    run_dir = _run(tmp_path, **{**TASK_CONFIG[task], **skew, "strategy": "tests.toy_strategy:ToyAverage",
                                "algorithm": "rafbo"})
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.1
    if task == "hyper-cleaning":  # FedAvg sends every sample's weight; each node trains its own
        assert "detection-f1" in rows[-1]
        model = torch.load(run_dir / "model.pt", weights_only=True)
        assert model["parts"]["x"]["sample.logit"].abs().max() > 0
    assert all(r["bytes-down"] > 0 and r["bytes-up"] > 0 for r in rows[1:])
    assert {float(c["resource-ratio"]) for c in _clients(run_dir)} == {1.0}  # no widths: full model
    no_arguments = _run(tmp_path / "b", strategy="tests.toy_strategy:NoArguments", algorithm="rafbo")
    assert (no_arguments / "summary.json").is_file()


def test_flowers_own_strategies_run_as_baselines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`strategy='flwr:Name'`: Flower's FedAvg, FedProx, FedAdam and FedMedian through the real
    ClientApp: the ClientApp answers Flower's evaluate messages, the sampling keys reach the
    strategy, FedProx's proximal-mu reaches the local solver, and no node's partition-id is
    averaged into the metrics."""
    import logging

    finals = {}
    for name, extra in (("FedAvg", {}), ("FedProx", {"proximal-mu": 5.0}), ("FedAdam", {}),
                        ("FedMedian", {})):
        with caplog.at_level(logging.WARNING, logger="flwr"):
            run_dir = _run(tmp_path / name, num_nodes=4, strategy=f"flwr:{name}", algorithm="rafbo",
                           **{"min-train-nodes": 3, "fraction-train": 0.5}, **extra)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors[:2]
        rows = json.loads((run_dir / "metrics.json").read_text())
        # sampling keys reached the strategy: 3 of the 4 nodes per round (min-train-nodes)
        assert all(r["replies"] == 3 and r["failed-replies"] == 0 for r in rows[1:]), name
        assert all(0 <= r["federated-eval-accuracy"] <= 1 and r["federated-eval-loss"] > 0
                   for r in rows[1:]), name
        assert not any("partition-id" in key for r in rows for key in r)
        finals[name] = torch.load(run_dir / "model.pt", weights_only=True)["parts"]["x"]
        caplog.clear()
    # FedProx's mu pulled the local outer steps back toward the received x: another model
    assert any(not torch.equal(finals["FedProx"][k], finals["FedAvg"][k]) for k in finals["FedAvg"])


@pytest.mark.parametrize(("strategy", "message"), [
    ("tests.no_such_module:Strategy", "cannot import module 'tests.no_such_module'"),
    ("tests.toy_strategy:Missing", "module 'tests.toy_strategy' has no attribute 'Missing'"),
    ("tests.toy_strategy:NOT_A_STRATEGY", "'NOT_A_STRATEGY' is not a Flower Strategy"),
])
def test_bad_plugin_stops_the_run_with_one_message(tmp_path: Path, strategy: str, message: str) -> None:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "strategy": strategy, "algorithm": "rafbo"}
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    with pytest.raises(RunStopped, match=message):
        main(InProcessGrid(client_app, 2, run_config), context)


def test_fednest_mlp_setting(tmp_path: Path) -> None:
    """FedNest's hyper-representation network: x = the 784-200 layer (here 64-200), y = the head;
    many clients, a few sampled per round."""
    run_dir = _run(tmp_path, num_nodes=20, task="hyper-representation-mlp", **{"fraction-train": 0.25})
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert all(r["replies"] == 5 for r in rows[1:])
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.2
    model = torch.load(run_dir / "model.pt", weights_only=True)
    assert model["parts"]["x"]["fc1.weight"].shape == (200, 64)


def test_the_server_talks_to_every_strategy_through_one_contract() -> None:
    """The built-in strategy and a wrapped plug-in are both ServerFacing; the wrapper gives explicit
    defaults (no profiles yet, no accepted replies, no node evaluation rows) and checkpoints the
    plug-in's own state only when the plug-in is Stateful."""
    built_in = built_in_strategy(SMALL_DIGITS_TASK.layers)
    plain, counting = ValidatedReplies(NoArguments(), 1e3), ValidatedReplies(CountingAverage(), 1e3)
    assert all(isinstance(s, ServerFacing) for s in (built_in, plain, counting))
    assert (plain.profiles, plain.accepted_ratios, plain.node_eval_rows, plain.state()) == ({}, {}, (), {})
    plain.load_state({"anything": 1})  # a plug-in without state of its own resumes fresh
    assert not isinstance(NoArguments(), Stateful) and isinstance(CountingAverage(), Stateful)
    resumed = ValidatedReplies(CountingAverage(), 1e3)
    counting.inner.rounds = 4  # type: ignore[attr-defined]
    resumed.load_state(counting.state())
    assert resumed.state() == {"rounds": 4} and resumed.inner.rounds == 4  # type: ignore[attr-defined]
    assert built_in.node_eval_rows == [] and set(built_in.state()) >= {"velocity", "agreement-record"}
