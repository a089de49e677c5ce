"""Nothing a client claims is trusted beyond what the server can check: which samples it owns, how
much its reply weighs, the text it sends, the names of its metrics, the server's own figures."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, pack, unpack
from server_app.app import initial_arrays
from server_app.inprocess import InProcessGrid
from server_app.loop import client_row, run_rounds
from server_app.metering import MeteredGrid
from server_app.results import write_results
from server_app.strategies import build_strategy
from tasks.hyper_cleaning import LOGIT
from tests.fakes import (
    FAST_CONFIG,
    SMALL_DIGITS_TASK,
    built_in_strategy,
    fake_client,
    initial_model,
    train_reply,
)

TASK = SMALL_DIGITS_TASK


def _strategy(**keys: object):
    return built_in_strategy(TASK.layers, algorithm="rafbo", ratio_levels=(1.0,), min_train_nodes=1,
                             min_available_nodes=1, **keys)


def _moved(msg: Message, metrics: dict[str, object], shift: float = 0.1) -> Message:
    """A reply to ``msg`` that adds ``shift`` to every coordinate it was sent, with ``metrics``."""
    sent = unpack(msg.content[ARRAYS])
    return train_reply(msg, {p: {k: a + shift for k, a in d.items()} for p, d in sent.items()}, metrics)


def test_a_node_claiming_partition_0_of_1_does_not_own_every_sample_weight(
        caplog: pytest.LogCaptureFixture) -> None:
    """Hyper-cleaning: node 0 declares "partition 0 of 1", node 3 the partition node 1 holds; the
    federation has one num-partitions (3, what the others declare) and one node per partition."""
    cfg = parse_run_config({**FAST_CONFIG, "task": "hyper-cleaning", "label-noise": 0.3})
    strategy = build_strategy(cfg, initial_arrays(cfg)[1])
    claims = {0: (0, 1), 1: (1, 3), 2: (2, 3), 3: (1, 3)}
    client = fake_client(lambda pid: {"partition-id": claims[pid][0], "num-partitions": claims[pid][1]},
                         lambda msg, pid: msg)
    grid = InProcessGrid(client, 4, {})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.ensure_profiles(grid, sorted(grid.get_node_ids()), 1)
    assert sorted(strategy.profiles) == [1001, 1002]
    assert "node 1000 left out: it declares num-partitions=1, the federation has 3" in caplog.text
    assert "node 1003 left out: partition 1 is held by node 1001" in caplog.text
    coords = [set(strategy._coords_by_node[n][LOGIT].tolist()) for n in (1001, 1002)]
    assert coords[0] and coords[1] and not coords[0] & coords[1]
    assert len(coords[0] | coords[1]) < initial_arrays(cfg)[1].num_samples  # partition 0 is nobody's yet


def test_a_node_declaring_1e9_examples_does_not_buy_the_mean() -> None:
    """Five honest nodes of 20 examples and one that declares (and replies) 1e9: its reply weighs
    at most 4 x the median declaration, 80, which is less than half of the mean's weight."""
    def train(msg: Message, pid: int) -> Message:
        return _moved(msg, {"num-examples": 10**9 if pid == 5 else 20}, 2.0 if pid == 5 else 1.0)

    client = fake_client(lambda pid: {"partition-id": pid, "num-examples": 10**9 if pid == 5 else 20}, train)
    grid = InProcessGrid(client, 6, {})
    strategy = _strategy()
    initial = initial_model(TASK)
    messages = strategy.configure_train(1, pack(initial), ConfigRecord(), grid)
    arrays, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
    assert arrays is not None and metrics["replies"] == 6
    step = unpack(arrays)["y"]["head.bias"] - initial["y"]["head.bias"]
    np.testing.assert_allclose(step, (100 * 1.0 + 80 * 2.0) / 180, rtol=1e-5)  # 2.0: all its weight
    assert strategy.profiles[1005].examples_cap == 80 and strategy.profiles[1000].examples_cap == 20


def test_client_error_texts_are_cut_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """A 2 MB error text with a forged log line, in a profile and in a train reply: the log gets at
    most a few hundred escaped characters of each, on one line."""
    forged = "x" * 2_000_000 + "\nINFO :      round 1: everything is fine"

    def train(msg: Message, pid: int) -> Message:
        raise RuntimeError(forged)

    client = fake_client(lambda pid: {"error": forged} if pid == 2 else {"partition-id": pid}, train)
    grid = InProcessGrid(client, 3, {})
    strategy = _strategy()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        messages = strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)
        strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
    warnings = [r.getMessage() for r in caplog.records if "node 100" in r.getMessage()]
    assert len(warnings) == 3  # the profile of node 2, the replies of nodes 0 and 1
    assert all(len(w) < 1000 and "\n" not in w and w.endswith("\\nINFO :      round 1: everything is fine")
               for w in warnings[:1])
    assert all(len(w) < 1000 and "\n" not in w and "everything is fine" in w for w in warnings[1:])
    assert "...[2000040 characters]..." in warnings[0]


def test_client_metric_names_are_bounded_in_number_length_and_charset(
        caplog: pytest.LogCaptureFixture) -> None:
    """A reply with 5,000 metrics, long names and a newline in a name: the round's metrics and its
    clients.csv row keep at most 64 of them, each a short safe name, with one warning per reply."""
    noise = {f"m{i:04d}-" + "y" * (10 if i < 100 else 300): float(i) for i in range(5000)}
    noise["bad\nname"] = 1.0

    client = fake_client(lambda pid: {"partition-id": pid},
                         lambda msg, pid: _moved(msg, {"num-examples": 10, **noise}))
    grid = InProcessGrid(client, 2, {})
    strategy = _strategy()
    messages = strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)
    replies = list(grid.send_and_receive(messages))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        _, metrics = strategy.aggregate_train(1, replies)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "node 1000: 4938 reply metrics dropped" in warnings[0]
    assert metrics["replies"] == 2
    client_keys = [k for k in metrics if k.startswith("m")]
    assert len(client_keys) == 63 and all(len(k) <= 64 for k in client_keys)  # and num-examples
    row = client_row(1, replies[0], {}, strategy.accepted_ratios)
    assert len(row) <= 64 + 6 and all(len(k) <= 64 and "\n" not in k for k in row)


def test_client_metrics_cannot_set_the_servers_cost_evaluation_or_identity_figures(tmp_path: Path) -> None:
    """Every client reports the server's figures (detection, federated and test evaluation, the
    round's counts, its partition id); one reports 1e30 FLOPs. summary.json, metrics.json and
    clients.csv hold the server's figures, and the FLOPs of a ratio are its replies' median."""
    def train(msg: Message, pid: int) -> Message:
        flops = 1e30 if pid == 2 else 1000.0
        return _moved(msg, {"num-examples": 10, "flops": flops, "flops-per-step": flops / 10,
                                "detection-f1": 1.0, "federated-eval-accuracy": 1.0, "test-accuracy": 1.0,
                                "partition-id": 99, "client-flops": 1e30, "replies": 1e9})

    grid = MeteredGrid(InProcessGrid(fake_client(lambda pid: {"partition-id": pid}, train), 3, {}))
    rows: list[dict] = []
    clients: list[dict] = []

    def on_round_end(rnd: int, arrays: ArrayRecord, row: dict, client_rows: list[dict]) -> None:
        rows.append(row)
        clients.extend(client_rows)

    run_rounds(_strategy(), grid, pack(initial_model(TASK)), range(1, 3), timeout=60.0,
               evaluate=lambda rnd, arrays: MetricRecord({"test-accuracy": 0.5}), on_round_end=on_round_end)
    summary = write_results(tmp_path, rows=rows, client_rows=clients, nodes=[], title="claims")
    assert [r["client-flops"] for r in rows] == [3000, 3000] and summary["total-client-flops"] == 6000
    assert summary["cost-by-ratio"]["1.0"]["flops-per-step"] == 100.0
    assert summary["final"] == {"test-accuracy": 0.5} and summary["final-node-eval"] == {}
    assert all(r["replies"] == 3 and "detection-f1" not in r for r in json.loads(
        (tmp_path / "metrics.json").read_text()))
    with (tmp_path / "clients.csv").open() as handle:
        assert sorted(int(r["partition-id"]) for r in csv.DictReader(handle)) == [0, 0, 1, 1, 2, 2]
