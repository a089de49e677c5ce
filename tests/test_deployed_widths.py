"""The submodels devices deploy: the server evaluates each ratio's leading units every round, each
node scores the submodel of its ratio on its own test data (``node-eval-every``), and BatchNorm
statistics come from where ``norm-stats`` says."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

import client_app.app as client_module
from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.wire import METRICS, pack
from server_app.app import run
from server_app.evaluation import Evaluator
from server_app.export import load_submodel, main
from server_app.inprocess import InProcessGrid
from tasks import BackboneTask, Batch
from tasks.network import running_statistics, with_statistics
from tests.fakes import FAST_CONFIG, SMALL_DIGITS_TASK, initial_model
from tests.networks import small_bn

NODE_EVAL = {**FAST_CONFIG, "num-server-rounds": 2, "node-eval-every": 2, "inner-steps": 1, "v-steps": 1,
             "outer-steps": 1}


def _run(tmp_path: Path, keys: dict[str, Any], client: Any = client_app) -> Path:
    run_config = {**NODE_EVAL, "results-dir": str(tmp_path), **keys}
    return run(InProcessGrid(client, 4, run_config), parse_run_config(run_config))


def test_statistics_are_the_inputs_and_evaluation_uses_them() -> None:
    task = BackboneTask((1, 8, 8), 10, factory=small_bn, norm_stats="recalibrate")
    torch.manual_seed(0)
    x, y = task.init_params(task.full_widths())
    batch = Batch(torch.randn(100, 1, 8, 8), torch.randint(0, 10, (100,)))
    model = task.build_model(task.full_widths())
    stats = running_statistics(model, {**x, **y}, batch.inputs)
    conv = torch.nn.functional.conv2d(batch.inputs, x["backbone.0.weight"], x["backbone.0.bias"], padding=1)
    torch.testing.assert_close(stats["backbone.1.running_mean"], conv.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(stats["backbone.1.running_var"], conv.transpose(0, 1).flatten(1).var(dim=1))
    # the server's recalibration is exactly these statistics; batch statistics differ from them
    assert task.evaluate(model, x, y, batch) == task.evaluate(model, x, y, batch, stats)
    assert task.evaluate(model, x, y, batch, stats) != BackboneTask(
        (1, 8, 8), 10, factory=small_bn).evaluate(model, x, y, Batch(batch.inputs[:10], batch.labels[:10]))
    with pytest.raises(ValueError, match="backbone.1.running_var"):
        with_statistics(model, {"backbone.1.running_mean": stats["backbone.1.running_mean"]})


def test_each_ratio_is_evaluated_on_its_leading_units() -> None:
    """The CNN at r = 1/2, sliced by hand: every unit past the leading half holds NaN, which the
    full width reads and the deployed half must not."""
    task, parts = SMALL_DIGITS_TASK, initial_model(SMALL_DIGITS_TASK)
    x, y = parts["x"], parts["y"]
    hand_x = {"conv1.weight": x["conv1.weight"][:2].copy(), "conv1.bias": x["conv1.bias"][:2].copy(),
              "conv2.weight": x["conv2.weight"][:3, :2].copy(), "conv2.bias": x["conv2.bias"][:3].copy(),
              # fc1 reads conv2's 6 channels x 2 x 2 positions, channel-major
              "fc1.weight": x["fc1.weight"].reshape(8, 6, 4)[:4, :3].reshape(4, 12).copy(),
              "fc1.bias": x["fc1.bias"][:4].copy()}
    hand_y = {"head.weight": y["head.weight"][:, :4].copy(), "head.bias": y["head.bias"].copy()}
    x["conv1.weight"][2:] = x["conv2.weight"][3:] = x["fc1.weight"][4:] = float("nan")
    y["head.weight"][:, 4:] = float("nan")
    test = Batch(torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(50) % 10)
    metrics = Evaluator(task, test, torch.device("cpu"), ratios=(1.0, 0.5))(1, pack(parts))
    assert "test-accuracy@1" not in metrics and torch.isnan(torch.tensor(metrics["test-loss"]))
    expected = task.evaluate(task.build_model({"conv1": 2, "conv2": 3, "fc1": 4, "head": 10}),
                             {k: torch.as_tensor(v) for k, v in hand_x.items()},
                             {k: torch.as_tensor(v) for k, v in hand_y.items()}, test)
    assert (metrics["test-accuracy@0.5"], metrics["test-loss@0.5"]) == (expected["test-accuracy"],
                                                                        expected["test-loss"])


def test_nodes_evaluate_the_submodel_of_their_ratio(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, {})
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert not any(k.startswith("federated-") for k in rows[1])  # every 2 rounds only
    final = {k: v for k, v in rows[2].items() if k.startswith("federated-eval-")}
    assert set(final) == {"federated-eval-nodes", "federated-eval-accuracy", "federated-eval-loss",
                          *(f"federated-eval-accuracy@{r}" for r in ("1", "0.5", "0.25", "0.125"))}
    with (run_dir / "node-eval.csv").open() as handle:
        nodes = list(csv.DictReader(handle))
    assert [(n["partition-id"], float(n["resource-ratio"])) for n in nodes] == [
        ("0", 1.0), ("1", 0.5), ("2", 0.25), ("3", 0.125)]
    assert final["federated-eval-accuracy@0.25"] == pytest.approx(float(nodes[2]["eval-accuracy"]))
    assert final["federated-eval-accuracy"] == pytest.approx(
        sum(float(n["eval-accuracy"]) for n in nodes) / 4)
    assert json.loads((run_dir / "summary.json").read_text())["final-node-eval"] == final


def test_a_node_cannot_forge_its_score(tmp_path: Path) -> None:
    """Scores outside [0, 1], and example counts that would weigh them, change nothing."""
    def client(msg: Message, context: Context) -> Message:
        if msg.metadata.message_type == "evaluate" and context.node_config["partition-id"] == 0:
            forged = MetricRecord({"eval-accuracy": 50.0, "eval-loss": 0.0, "num-examples": 10**9})
            return Message(RecordDict({METRICS: forged}), reply_to=msg)
        if msg.metadata.message_type == "evaluate" and context.node_config["partition-id"] == 1:
            forged = MetricRecord({"eval-accuracy": 1.0, "eval-loss": 0.0, "num-examples": 10**9})
            return Message(RecordDict({METRICS: forged}), reply_to=msg)
        return client_app(msg, context)

    row = json.loads((_run(tmp_path, {}, client) / "metrics.json").read_text())[-1]
    assert row["federated-eval-nodes"] == 3 and "federated-eval-accuracy@1" not in row
    others = [row[f"federated-eval-accuracy@{r}"] for r in ("0.25", "0.125")]
    assert row["federated-eval-accuracy"] == pytest.approx((1.0 + sum(others)) / 3)


@pytest.mark.parametrize("norm_stats", ["batch", "recalibrate", "local"])
def test_where_a_node_takes_its_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           norm_stats: str) -> None:
    """``local``: computed on the node from its own train inputs; ``recalibrate``: sent by the
    server with the submodel; ``batch``: none."""
    computed, used = [], []
    monkeypatch.setattr(client_module, "running_statistics",
                        lambda model, params, inputs: computed.append(len(inputs)) or
                        running_statistics(model, params, inputs))
    monkeypatch.setattr(client_module, "with_statistics",
                        lambda model, stats: used.append(sorted(stats)) or with_statistics(model, stats))
    run_dir = _run(tmp_path, {"task": "tests.networks:small_bn_task", "norm-stats": norm_stats})
    assert len(used) == (0 if norm_stats == "batch" else 4)
    assert all(keys == ["backbone.1.running_mean", "backbone.1.running_var"] for keys in used)
    with (run_dir / "clients.csv").open() as handle:
        train_sizes = sorted({int(float(r["num-examples"])) for r in csv.DictReader(handle)})
    assert sorted(set(computed)) == (train_sizes if norm_stats == "local" else [])


@pytest.mark.parametrize("task", ["hyper-representation", "tests.networks:small_bn_task"])
def test_an_exported_submodel_predicts_the_same_in_a_fresh_process(tmp_path: Path, task: str) -> None:
    run_dir = _run(tmp_path, {"task": task, "num-server-rounds": 1, "node-eval-every": 0,
                              "norm-stats": "recalibrate"})
    main([str(run_dir), "--ratio", "0.5"])
    info = json.loads((run_dir / "deploy-r0.5.json").read_text())
    final = json.loads((run_dir / "metrics.json").read_text())[-1]
    # the exported network is the one test-accuracy@0.5 scores (statistics of the held-out inputs)
    assert info["test-accuracy"] == pytest.approx(final["test-accuracy@0.5"], abs=1e-6)
    inputs = torch.randn(5, *info["in-shape"], generator=torch.Generator().manual_seed(0))
    torch.save(inputs, tmp_path / "inputs.pt")
    script = ("import sys, torch; m = torch.export.load(sys.argv[1]).module(); "
              "torch.save(m(torch.load(sys.argv[2])), sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, str(run_dir / "deploy-r0.5.pt2"),
                    str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")], check=True, cwd=tmp_path)
    rebuilt = load_submodel(run_dir / "deploy-r0.5.pt")
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), rebuilt(inputs))
    assert info["parameters"] == sum(t.numel() for t in rebuilt.parameters())
    # the program carries its two example inputs, not the storage of the test set they come from
    examples, _ = torch.export.load(run_dir / "deploy-r0.5.pt2").example_inputs
    assert [t.untyped_storage().nbytes() for t in examples] == [2 * math.prod(info["in-shape"]) * 4]
