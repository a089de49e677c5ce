"""The server's root-set update as the screen's reference (``screen-reference``, ``root-size``)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message

from client_app.app import app as client_app
from client_app.local import local_round
from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning.submodel import SliceIndex
from rabo_strategy import ResourceAdaptiveBilevel
from rabo_strategy.ahead import UpdateAhead
from rabo_strategy.medians import Sliced
from rabo_strategy.screen import AgreementScreen
from server_app import reference as reference_module
from server_app.app import run
from server_app.inprocess import InProcessGrid
from server_app.strategies import server_reference
from tasks import client_data, make_task
from tests.fakes import (
    FAST_CONFIG,
    SMALL_DIGITS_TASK,
    STRATEGY_DEFAULTS,
    fake_client,
    initial_model,
    train_reply,
)

RATIOS = [1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5]
FULL_SIZE = {0, 4, 8}
WIDTH = 64


def _round(server_round: int) -> list[Sliced]:
    """Each client's update on its leading coordinates: a weak shared direction (0.02 per
    coordinate) under noise 2.5x larger, as the first rounds of a fresh model look; the three
    full-size clients reverse theirs and send it 10x larger."""
    replies = []
    for pid, ratio in enumerate(RATIOS):
        kept = int(WIDTH * ratio)
        update = 0.02 + np.random.default_rng([pid, server_round]).normal(scale=0.05, size=kept)
        replies.append(Sliced({"x:w": -10 * update if pid in FULL_SIZE else update},
                              {"x:w": SliceIndex(np.arange(kept))}))
    return replies


def test_the_three_full_size_attackers_pass_the_others_and_not_the_server() -> None:
    """The only clients that train every coordinate reverse their updates: judged against the
    other replies (whose median they set where they are most), none of them is refused in two
    rounds; against the server's update as well, all three are refused in each, with the reason,
    and no honest reply is."""
    full, server = {"x": {"w": np.zeros(WIDTH)}}, {"x": {"w": np.full(WIDTH, 0.02)}}
    peers = AgreementScreen(min_agreement=-0.1, max_size=10.0)
    both = AgreementScreen(min_agreement=-0.1, max_size=10.0, reference="both",
                           server_update=lambda sent, server_round: server)
    for server_round in (1, 2):
        replies = _round(server_round)
        assert [v.refused for v in peers(replies, full, RATIOS, range(10))] == [None] * 10
        verdicts = both(replies, full, RATIOS, range(10), server)
        assert {i for i, v in enumerate(verdicts) if v.refused} == FULL_SIZE
        assert all("disagree with the server's root-set update" in verdicts[i].refused for i in FULL_SIZE)
    assert set(both.server_record) == set(range(10)) and both.server_record[0][1] == 2


def test_a_screen_is_given_the_servers_update_exactly_when_it_judges_by_it() -> None:
    full, server = {"x": {"w": np.zeros(WIDTH)}}, {"x": {"w": np.ones(WIDTH)}}
    with pytest.raises(ValueError, match="needs the server's update"):
        AgreementScreen(reference="both")
    with pytest.raises(ValueError, match="without the server's update"):
        AgreementScreen(reference="server", server_update=lambda sent, rnd: server)(_round(1), full, RATIOS,
                                                                                    range(10))
    with pytest.raises(ValueError, match="with the server's update"):
        AgreementScreen()(_round(1), full, RATIOS, range(10), server)


def test_the_reference_is_a_clients_full_width_round_on_the_root_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given partition 0's data as its root set and partition 0's seeds, the server's update is
    exactly the update partition 0 computes at full width (RAFBO: x, y, v), computed as the
    strategy does, in a thread while partition 0 trains in this one."""
    cfg = parse_run_config({**FAST_CONFIG, "root-size": 50})
    spec = cfg.data_spec(num_partitions=4)
    task = make_task(cfg.task, spec, cfg.mu)
    torch.manual_seed(0)
    x, y = task.init_params(task.full_widths(), task.num_samples)
    parts = {"x": {k: t.numpy() for k, t in x.items()}, "y": {k: t.numpy() for k, t in y.items()},
             "v": {k: np.zeros(t.shape, np.float32) for k, t in y.items()}}
    data = client_data(spec, 0)
    monkeypatch.setattr(reference_module, "ROOT_KEY", 0)
    ahead = UpdateAhead(reference_module.ServerReference(task, cfg, data, torch.device("cpu")))
    ahead.start(parts, 2)
    client, _ = local_round(task, data, cfg, task.full_widths(), parts, server_round=2, partition_id=0)
    server = ahead(parts, 2)
    for part in ("x", "y", "v"):
        for name, value in client[part].items():
            np.testing.assert_array_equal(server[part][name], value.double().numpy() - parts[part][name])


def test_the_keys_are_checked_at_the_boundary() -> None:
    assert (parse_run_config({}).screen_reference, parse_run_config({}).root_size) == ("both", 100)
    with pytest.raises(ValueError, match="screen-reference='both'.*root-size > 0"):
        parse_run_config({"root-size": 0})
    assert parse_run_config({"root-size": 0, "screen-reference": "peers"}).root_size == 0
    with pytest.raises(ValueError, match="'screen-reference' = 'clients': Input should be 'peers', 'server'"):
        parse_run_config({"screen-reference": "clients", "root-size": 10})
    plugin = parse_run_config({"strategy": "flwr:FedAvg"})  # plug-ins have no agreement screen
    task = make_task(plugin.task, plugin.data_spec(1), plugin.mu)
    assert server_reference(plugin, task, torch.device("cpu")) is None
    cfg = parse_run_config({"dataset": "sklearn-digits", "root-size": 10**6})
    with pytest.raises(ConfigError, match=r"'root-size' = 1000000: .*must be in \[1, 1438\]"):
        server_reference(cfg, make_task(cfg.task, cfg.data_spec(1), cfg.mu), torch.device("cpu"))


def test_a_run_with_the_server_reference_records_its_cost_and_its_records(tmp_path: Path) -> None:
    run_config = {**FAST_CONFIG, "num-server-rounds": 2, "root-size": 40, "results-dir": str(tmp_path)}
    run_dir = run(InProcessGrid(client_app, 6, run_config), parse_run_config(run_config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert all(row["reference-seconds"] > 0 and row["failed-replies"] == 0 for row in rows[1:])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["strategy_state"]
    assert sorted(state["server-agreement-record"]) == list(range(6))


def _nudge(msg: Message, pid: int) -> Message:
    """A node's train reply: every tensor it was sent, plus 0.01."""
    sent = unpack(msg.content[ARRAYS])
    return train_reply(msg, {p: {k: v + 0.01 for k, v in d.items()} for p, d in sent.items()},
                       {"num-examples": 10})


def _six_nodes(train: Callable[[Message, int], Message], server_update: Callable,
               **keys: object) -> tuple[ResourceAdaptiveBilevel, InProcessGrid]:
    """The strategy judging by the server's update (``screen-reference='both'`` and ``keys``) and
    an in-process grid of six full-size nodes that answer with ``train``."""
    grid = InProcessGrid(fake_client(lambda pid: {"partition-id": pid, "resource-ratio": 1.0}, train), 6, {})
    cfg = parse_run_config({**STRATEGY_DEFAULTS, "screen-reference": "both", "min-train-nodes": 1,
                            "min-available-nodes": 1, **keys})
    return ResourceAdaptiveBilevel(SMALL_DIGITS_TASK.layers, cfg, server_update=server_update), grid


def test_no_reference_is_trained_while_the_direction_test_is_off() -> None:
    """``min-agreement=-1`` turns the direction test off: the server never trains its reference
    (no ``reference-seconds``), whatever ``screen-reference`` says."""
    def never(sent: object, server_round: int) -> None:
        raise AssertionError("the reference was trained")

    strategy, grid = _six_nodes(_nudge, never)
    messages = strategy.configure_train(1, pack(initial_model(SMALL_DIGITS_TASK)), ConfigRecord(), grid)
    _, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
    assert metrics["replies"] == 6 and "reference-seconds" not in metrics


def test_the_reference_is_trained_while_the_nodes_train() -> None:
    """The strategy starts the server's update when it sends the round: the nodes see it begin
    before they reply, aggregation waits only for what is left of it, it runs once a round, and at
    the lowest priority (Linux)."""
    started, calls = threading.Event(), []

    def update(sent: dict, server_round: int) -> dict:
        started.set()
        linux = sys.platform.startswith("linux")  # where a thread has a priority of its own
        priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if linux else 19
        calls.append((server_round, priority))
        time.sleep(0.3)
        return {p: {k: 0.01 + 0 * v for k, v in d.items()} for p, d in sent.items()}

    def train(msg: Message, pid: int) -> Message:
        assert started.wait(5.0), "the reference had not started while the node trained"
        time.sleep(0.3 / 6)  # the six nodes' work covers the update's 0.3 s
        return _nudge(msg, pid)

    strategy, grid = _six_nodes(train, update, **{"min-agreement": 0.0})
    arrays = pack(initial_model(SMALL_DIGITS_TASK))
    for server_round in (1, 2):
        started.clear()
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        arrays, metrics = strategy.aggregate_train(server_round, list(grid.send_and_receive(messages)))
        assert metrics["replies"] == 6 and metrics["reference-seconds"] >= 0.3
        assert metrics["reference-wait-seconds"] < 0.2
    assert calls == [(1, 19), (2, 19)]
