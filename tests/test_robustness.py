"""Misbehaving clients never crash a round or corrupt the global model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client_app.app import app as client_app
from client_app.app import local_data
from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning import make_mask_policy
from rabo_strategy import ResourceAdaptiveBilevel
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tests.fakes import (
    FAST_CONFIG,
    SMALL_DIGITS_TASK,
    ClientFn,
    built_in_strategy,
    fake_client,
    initial_model,
    noisy_update,
    profile_reply,
    train_reply,
)

TASK = SMALL_DIGITS_TASK


def _client(algorithm: str, ratios: list[float], garbage: dict[int, str],
            delay: dict[int, float]) -> ClientFn:
    def train(msg: Message, pid: int) -> Message:
        time.sleep(delay.get(pid, 0.0))
        kind = garbage.get(pid)
        if kind == "raise":
            raise RuntimeError("client crashed")
        out = noisy_update(unpack(msg.content[ARRAYS]), pid, algorithm)
        name = next(iter(out["y"]))
        if kind == "nan":
            out["y"][name].flat[0] = np.nan
        elif kind == "attack":  # a large update, yet under max-update-norm: passes every check
            sent = unpack(msg.content[ARRAYS])
            out = {p: {k: sent.get(p, {}).get(k, 0) - 40.0 * (a - sent.get(p, {}).get(k, 0)) if p != "h"
                       else -40.0 * a for k, a in d.items()} for p, d in out.items()}
        # every client also claims the server's own round figures (they must not stick)
        return train_reply(msg, out, {"num-examples": 5 + pid, "failed-replies": -10.0,
                                      "replies": 1e9, "node-id": 7.0})

    return fake_client(lambda pid: {"partition-id": pid, "resource-ratio": ratios[pid]}, train)


def _strategy(algorithm: str, policy: str = "random", seed: int = 5,
              **kwargs: float) -> ResourceAdaptiveBilevel:
    kwargs = {"min_available_nodes": 1, **kwargs}
    return built_in_strategy(TASK.layers, mask=make_mask_policy(policy, seed), algorithm=algorithm,
                             ratio_levels=(1.0,), outer_lr=0.5, max_update_norm=1e3, min_train_nodes=1,
                             **kwargs)


def test_stragglers_past_the_round_timeout_are_dropped() -> None:
    grid = InProcessGrid(_client("rafbo", [1.0] * 3, {}, {1: 0.3}), 3, {})
    strategy = _strategy("rafbo")
    messages = strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)
    replies = list(grid.send_and_receive(messages, timeout=0.1))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["replies"] == 2 and metrics["failed-replies"] == 1


def test_too_few_successful_replies_skip_the_round() -> None:
    grid = InProcessGrid(_client("rabo", [1.0] * 4, {0: "raise", 1: "nan"}, {}), 4, {})
    strategy = _strategy("rabo", min_successful_replies=3)
    messages = strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None and metrics["skipped"] == 1 and metrics["replies"] == 2


def test_injected_client_failures_are_tolerated(tmp_path: Path) -> None:
    config = {**FAST_CONFIG, "results-dir": str(tmp_path), "client-failure-rate": 0.3,
              "num-server-rounds": 4}
    run_dir = run(InProcessGrid(client_app, 8, config), parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    draws = [[np.random.default_rng([0, r, p, 7]).random() < 0.3 for p in range(8)] for r in range(1, 5)]
    assert [row["failed-replies"] for row in rows[1:]] == [sum(d) for d in draws]
    assert sum(sum(d) for d in draws) > 0
    assert max(r["test-accuracy"] for r in rows[1:]) > rows[0]["test-accuracy"] + 0.2


def test_a_node_with_an_invalid_node_config_is_left_out(tmp_path: Path) -> None:
    config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 1}
    node_configs = [{"resource-ratio": 1.5}, {}, {}]
    run_dir = run(InProcessGrid(client_app, 3, config, node_configs=node_configs),
                  parse_run_config(config))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [n["partition_id"] for n in summary["nodes"]] == [1, 2]
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert rows[1]["replies"] == 2


def test_a_node_replying_twice_counts_once() -> None:
    grid = InProcessGrid(_client("rafbo", [1.0] * 2, {}, {}), 2, {})
    strategy = _strategy("rafbo")
    replies = list(grid.send_and_receive(
        strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)))
    once, _ = strategy.aggregate_train(1, replies)
    list(strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid))
    twice, metrics = strategy.aggregate_train(1, replies + replies[:1])
    assert metrics["replies"] == 2
    for key in once:
        np.testing.assert_array_equal(once[key].numpy(), twice[key].numpy())


def test_both_strategies_count_a_second_reply_and_a_missing_one_alike() -> None:
    """The built-in strategy and a wrapped plug-in take their replies through one loop
    (rabo_strategy.intake): a node's second reply and a node that never replied each count once in
    failed-replies; the node's first reply stands."""
    from server_app.validation import ValidatedReplies
    from tests.toy_strategy import NoArguments

    grid = InProcessGrid(_client("rafbo", [1.0] * 3, {}, {}), 3, {})
    built_in = _strategy("rafbo")
    replies = list(grid.send_and_receive(
        built_in.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)))
    _, metrics = built_in.aggregate_train(1, replies[:2] + replies[:1])
    assert (metrics["replies"], metrics["failed-replies"]) == (2, 2)

    def train(msg: Message, pid: int) -> Message:
        out = {k: a.numpy() + np.float32(0.01) for k, a in msg.content.array_records["arrays"].items()}
        record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()})
        return Message(RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 5})}),
                       reply_to=msg)

    grid = InProcessGrid(fake_client(lambda pid: {"partition-id": pid}, train), 3, {})
    plugin = NoArguments()
    plugin.min_train_nodes = plugin.min_available_nodes = 1
    wrapped = ValidatedReplies(plugin, 1e3)
    replies = list(grid.send_and_receive(
        wrapped.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)))
    _, metrics = wrapped.aggregate_train(1, replies[:2] + replies[:1])
    assert (metrics["replies"], metrics["failed-replies"]) == (2, 2)
    assert set(wrapped.accepted_ratios) == {r.metadata.src_node_id for r in replies[:2]}


def test_the_reply_modules_docstring_examples_run() -> None:
    import doctest

    from rabo_strategy import contract, intake, lazy, medians, screen

    for module in (contract, intake, lazy, medians, screen):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_a_profile_with_list_values_leaves_the_node_out() -> None:
    """A profile value of the wrong type leaves the node out with a logged reason, never a TypeError."""
    def client(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        return profile_reply(msg, {"partition-id": pid, "resource-ratio": [0.5, 0.25] if pid == 0 else 1.0})

    grid = InProcessGrid(client, 2, {})
    strategy = _strategy("rafbo")
    strategy.ensure_profiles(grid, sorted(grid.get_node_ids()), 1)
    assert set(strategy.profiles) == {1001}


def test_too_few_nodes_stop_the_run_instead_of_waiting_forever() -> None:
    """min-available-nodes above the nodes there are: a clear error after the wait (row 11)."""
    import pytest

    grid = InProcessGrid(_client("rafbo", [1.0], {}, {}), 1, {})
    strategy = _strategy("rafbo", min_available_nodes=3, round_timeout=0.5)
    with pytest.raises(RuntimeError, match="min-available-nodes=3 but only 1 node"):
        strategy.sampling.sample(grid, 1)


def test_rejected_replies_and_bad_metrics_stay_out_of_the_results(tmp_path: Path) -> None:
    """clients.csv has rows for accepted replies only; a NaN metric and a client's claim on the
    server's figures (failed-replies, node-id) are dropped, and the run completes (rows 2 and 7)."""
    def train(msg: Message, pid: int) -> Message:
        out = {p: {k: a + 0.01 for k, a in d.items()} for p, d in unpack(msg.content[ARRAYS]).items()}
        if pid == 0:  # rejected: NaN tensor
            name = next(iter(out["y"]))
            out["y"][name] = np.full_like(out["y"][name], np.nan)
        metrics = {"num-examples": 10, "flops": float("nan") if pid == 1 else 5.0, "failed-replies": -10.0,
                   "node-id": 7.0, "round": 99.0, "bytes-up": -1.0}
        if pid != 2:
            metrics["resource-ratio"] = 1.0  # node 2 reports no ratio (a plug-in's client may not)
        return train_reply(msg, out, metrics)

    client = fake_client(lambda pid: {"partition-id": pid, "resource-ratio": 1.0}, train)
    config = {**FAST_CONFIG, "num-server-rounds": 2, "results-dir": str(tmp_path), "algorithm": "rafbo"}
    run_dir = run(InProcessGrid(client, 3, config), parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert all(r["failed-replies"] == 1 and r["replies"] == 2 for r in rows[1:])
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["bytes-up"] > 0 for r in rows[1:])
    import csv

    with (run_dir / "clients.csv").open() as handle:
        clients = list(csv.DictReader(handle))
    assert sorted({int(c["node-id"]) for c in clients}) == [1001, 1002]
    assert all(c["flops"] in ("", "5.0") for c in clients)
    assert json.loads((run_dir / "summary.json").read_text())["final-test-accuracy"] >= 0


def test_plugin_strategies_get_the_same_reply_checks(tmp_path: Path) -> None:
    """A plug-in FedAvg passes the same screen: one NaN reply is
    skipped and counted, and the model is the average of the other replies."""
    import torch

    def train(msg: Message, pid: int) -> Message:
        arrays = msg.content.array_records["arrays"]
        out = {k: a.numpy() + 0.01 * (pid + 1) for k, a in arrays.items()}
        if pid == 0:
            out[next(iter(out))] = np.full_like(out[next(iter(out))], np.nan)
        if pid == 1:  # and one reply with a float64 model
            out = {k: v.astype(np.float64) for k, v in out.items()}
        record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()})
        return Message(RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    client = fake_client(lambda pid: {"partition-id": pid, "num-examples": 10}, train)
    config = {**FAST_CONFIG, "num-server-rounds": 2, "results-dir": str(tmp_path),
              "strategy": "tests.toy_strategy:ToyAverage", "min-train-nodes": 4, "min-available-nodes": 4}
    run_dir = run(InProcessGrid(client, 4, config), parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert all(r["failed-replies"] == 2 and r["replies"] == 2 for r in rows[1:])
    parts = torch.load(run_dir / "model.pt")["parts"]
    assert all(torch.isfinite(t).all() for part in parts.values() for t in part.values())
    import csv

    with (run_dir / "clients.csv").open() as handle:
        assert sorted({int(c["node-id"]) for c in csv.DictReader(handle)}) == [1002, 1003]


def test_a_ratio_source_with_a_newline_is_refused() -> None:
    """A ratio source is refused before it can reach the server log or summary.json."""
    import pytest

    from rabo_strategy import resolve_profile

    good = ConfigRecord({"partition-id": 0, "resource-ratio": 0.5, "ratio-source": "memory-mb=8"})
    assert resolve_profile(1, good, (1.0,)).source == "memory-mb=8"
    bad = ConfigRecord({"partition-id": 0, "resource-ratio": 0.5,
                        "ratio-source": "auto\nINFO: round 30/30: test accuracy 0.9999"})
    with pytest.raises(ValueError, match="not a short printable token"):
        resolve_profile(1, bad, (1.0,))


def test_a_killed_writers_temporary_file_is_cleaned_up(tmp_path: Path) -> None:
    from server_app.results import write_json

    stale = tmp_path / ".metrics.json.12345.tmp"
    stale.write_text("half a file")
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert not stale.exists() and json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}


def test_robust_aggregation_and_the_default_screen_stop_one_attacker() -> None:
    """One of 5 full-size clients sends its update reversed and 40x larger, under the absolute
    max-update-norm. The unscreened mean follows it; the median stays near the honest clients'
    average; the default screen refuses it (40x the size of the others at its ratio) and gives the
    honest average."""
    initial = initial_model(TASK)
    grid = InProcessGrid(_client("rafbo", [1.0] * 5, {4: "attack"}, {}), 5, {})

    def aggregate(**kwargs: object) -> tuple[dict, MetricRecord]:
        strategy = _strategy("rafbo", "static", **kwargs)  # type: ignore[arg-type]
        messages = strategy.configure_train(1, pack(initial), ConfigRecord(), grid)
        arrays, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
        return unpack(arrays), metrics

    honest_strategy = _strategy("rafbo", "static")
    messages = honest_strategy.configure_train(1, pack(initial), ConfigRecord(), grid)
    replies = list(grid.send_and_receive(messages))
    honest, _ = honest_strategy.aggregate_train(1, [r for r in replies if r.metadata.src_node_id != 1004])
    honest = unpack(honest)

    def distance(model: dict) -> float:
        return max(float(np.abs(model[p][k] - honest[p][k]).max()) for p in honest for k in honest[p])

    mean, metrics = aggregate()
    median, median_metrics = aggregate(aggregation="median")
    trimmed, _ = aggregate(aggregation="trimmed-mean", trim_fraction=0.2)
    screened, screened_metrics = aggregate(min_agreement=-0.1, max_update_norm_ratio=10.0)
    assert metrics["failed-replies"] == 0 and median_metrics["tolerated-byzantine-min"] == 2
    assert distance(mean) > 1.0  # the honest updates are ~0.1: the attacker moves the mean 8x that
    assert distance(median) < 0.3 and distance(trimmed) < 0.3
    assert screened_metrics["failed-replies"] == 1 and distance(screened) < 1e-6


def test_num_examples_are_bounded_by_what_the_node_declared() -> None:
    """A reply claiming 1000x its node's train examples, which would take ~100 % of the mean's
    weight, is refused, for the built-in strategy and a wrapped plug-in."""
    from server_app.validation import check_reply

    def train(msg: Message, pid: int) -> Message:
        out = {p: {k: a + 0.1 for k, a in d.items()} for p, d in unpack(msg.content[ARRAYS]).items()}
        return train_reply(msg, out, {"num-examples": 20 if pid else 20_000})

    client = fake_client(lambda pid: {"partition-id": pid, "resource-ratio": 1.0, "num-examples": 20}, train)
    grid = InProcessGrid(client, 3, {})
    strategy = _strategy("rafbo")
    messages = strategy.configure_train(1, pack(initial_model(TASK)), ConfigRecord(), grid)
    assert {p.num_examples for p in strategy.profiles.values()} == {20}
    _, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
    assert (metrics["replies"], metrics["failed-replies"]) == (2, 1)
    import pytest

    reply = Message(RecordDict({"arrays": ArrayRecord({"a": Array(np.zeros(2, np.float32))}),
                                "metrics": MetricRecord({"num-examples": 21})}),
                    reply_to=next(iter(messages)))
    with pytest.raises(ValueError, match="above the 20 train examples the node declared"):
        check_reply(reply, {"a": np.ones(2, np.float32)}, 1e3, declared=20)
    check_reply(reply, {"a": np.ones(2, np.float32)}, 1e3, declared=21)


def test_the_client_app_declares_its_train_examples_when_queried() -> None:
    """The bound of num-examples comes from the node itself: its train split's size."""
    from rabo_protocol import parse_node_config
    from server_app.app import initial_arrays
    from server_app.strategies import build_strategy

    cfg = parse_run_config({**FAST_CONFIG, "dataset": "sklearn-digits", "partitioner": "dirichlet"})
    strategy = build_strategy(cfg, initial_arrays(cfg)[1])
    grid = InProcessGrid(client_app, 3, FAST_CONFIG | {"partitioner": "dirichlet"})
    strategy.ensure_profiles(grid, sorted(grid.get_node_ids()), 1)
    declared = {node: p.num_examples for node, p in strategy.profiles.items()}
    sizes = {node: len(local_data(cfg, parse_node_config(ctx.node_config), ConfigRecord()).train)
             for node, ctx in grid.contexts.items()}
    assert declared == sizes and len(set(sizes.values())) > 1
