"""Every operator input ends in one clear message: a damaged checkpoint, a run directory already in
use, a run whose rounds all fail, too few nodes, an unusable path, a symlink planted where a key
is written. None ends in a traceback from deep inside or a run that never ends."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from client_app.app import app as client_app
from deploy.credentials import write_certificates, write_supernode_keys
from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.node import parse_node_config
from server_app.app import RunStopped, main, run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG


def _config(results: Path, **overrides: object) -> dict[str, object]:
    return {**FAST_CONFIG, "results-dir": str(results), "num-server-rounds": 1, "algorithm": "rabo",
            "inner-steps": 1, "v-steps": 1, "outer-steps": 1, **overrides}


def _context(run_config: dict[str, object]) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


class CountingClient:
    """The ClientApp, counting the messages it receives."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, msg: Message, context: Context) -> Message:
        self.calls += 1
        return client_app(msg, context)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One finished round of RABO (its checkpoint holds a velocity for every x tensor)."""
    config = _config(tmp_path_factory.mktemp("results"))
    return run(InProcessGrid(client_app, 2, config), parse_run_config(config)), config


def _copy(finished_run: tuple[Path, dict[str, object]], tmp_path: Path) -> tuple[Path, dict[str, object]]:
    run_dir = Path(shutil.copytree(finished_run[0], tmp_path / "run")).resolve()
    return run_dir, {**finished_run[1], "resume-from": str(run_dir)}


def _first_x(saved: dict[str, Any]) -> str:
    return next(iter(saved["parts"]["x"]))


DAMAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing velocity": (lambda saved: saved["strategy_state"].pop("velocity"), "strategy_state.velocity"),
    "velocity of the wrong shape": (
        lambda saved: saved["strategy_state"]["velocity"].update({_first_x(saved): torch.zeros(3)}),
        "strategy_state.velocity"),
    "agreement-record not {client key: agreement}": (
        lambda saved: saved["strategy_state"].update({"agreement-record": {"half": 2.0}}),
        "strategy_state.agreement-record"),
    "server-agreement-record out of range": (
        lambda saved: saved["strategy_state"].update({"server-agreement-record": {0: [2.0, 1.0, 0.0]}}),
        "strategy_state.server-agreement-record"),
    "empty rows": (lambda saved: saved.update(rows=[]), "rows"),
    "round not an integer": (lambda saved: saved.update(round="1"), "round"),
    "config not a dict": (lambda saved: saved.update(config=["seed"]), "config"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_field_stops_the_resume_before_any_node_is_contacted(
        finished_run: tuple[Path, dict[str, object]], tmp_path: Path, damage: str) -> None:
    """Each was a raw traceback (KeyError, IndexError, AttributeError, ValueError; the velocity of
    the wrong shape only after a round of client training) or a logging error."""
    run_dir, config = _copy(finished_run, tmp_path)
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved["strategy_state"]["velocity"], "RABO's checkpoint holds a velocity"
    damage_fn, field = DAMAGES[damage]
    damage_fn(saved)
    torch.save(saved, run_dir / "checkpoint.pt")
    client = CountingClient()
    expected = f"resume-from='{run_dir}': checkpoint.pt field '{field}'"
    with pytest.raises(RunStopped, match=re.escape(expected)):
        main(InProcessGrid(client, 2, config), _context(config))
    assert client.calls == 0
    assert not (run_dir / "run.lock").exists()


def late_trainer(msg: Message, context: Context) -> Message:
    """The ClientApp, except that its train replies take 10 ms (later than any tiny round-timeout)."""
    if msg.metadata.message_type == "train":
        time.sleep(0.01)
        return Message(RecordDict(), reply_to=msg)
    return client_app(msg, context)


class BlockingGrid(InProcessGrid):
    """Blocks when round ``block_round`` starts training, until ``release`` is set."""

    def __init__(self, block_round: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_round, self.blocked, self.release = block_round, threading.Event(), threading.Event()

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if any(m.metadata.message_type == "train" and m.metadata.group_id == str(self.block_round)
               for m in messages):
            self.blocked.set()
            self.release.wait(timeout=30)
        return super().send_and_receive(messages, timeout=timeout)


def test_a_run_directory_in_use_refuses_a_second_server(
        finished_run: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    """Two servers resuming one run directory: one crashed, neither refused."""
    run_dir, config = _copy(finished_run, tmp_path)
    config["num-server-rounds"] = 3
    first = BlockingGrid(3, client_app, 2, config)
    errors: list[BaseException] = []

    def resume() -> None:
        try:
            main(first, _context(dict(config)))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    server = threading.Thread(target=resume)
    server.start()
    try:
        assert first.blocked.wait(timeout=30), "the first server never reached round 3"
        client = CountingClient()
        holder = f"pid {os.getpid()} on host {socket.gethostname()}"
        with pytest.raises(RunStopped, match=re.escape(f"{run_dir} is in use by another run ({holder}")):
            main(InProcessGrid(client, 2, config), _context(dict(config)))
        assert client.calls == 0
    finally:
        first.release.set()
        server.join(timeout=60)
    assert errors == []
    assert json.loads((run_dir / "metrics.json").read_text())[-1]["round"] == 3
    assert not (run_dir / "run.lock").exists()


def test_the_lock_of_a_killed_server_is_taken_over_with_a_warning(
        finished_run: tuple[Path, dict[str, object]], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    run_dir, config = _copy(finished_run, tmp_path)
    config["num-server-rounds"] = 2
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                  "started": "2020-01-01 00:00:00 +0000"}))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        main(InProcessGrid(client_app, 2, config), _context(config))
    assert f"taking over the lock of a run that ended without releasing it (pid {dead.pid}" in caplog.text
    assert not (run_dir / "run.lock").exists()


@pytest.mark.parametrize("strategy", ["resource-adaptive", "flwr:FedAvg"])
def test_a_run_stops_after_max_idle_rounds_without_a_valid_reply(tmp_path: Path, strategy: str) -> None:
    """A round-timeout too short for any reply with a million rounds skipped rounds for months."""
    config = _config(tmp_path, **{"num-server-rounds": 1_000_000, "round-timeout": 1e-6, "max-idle-rounds": 2,
                                  "strategy": strategy, "algorithm": "rafbo"})
    stop = r"rounds 1-2 all left the global model unchanged: .*max-idle-rounds=2"
    with pytest.raises(RunStopped, match=stop):
        main(InProcessGrid(late_trainer, 2, config), _context(config))
    (run_dir,) = tmp_path.iterdir()
    assert [r["round"] for r in json.loads((run_dir / "metrics.json").read_text())] == [0, 1, 2]
    assert (run_dir / "model.pt").is_file()
    assert not (run_dir / "run.lock").exists()


@pytest.mark.parametrize("strategy", ["resource-adaptive", "flwr:FedAvg"])
def test_too_few_nodes_stop_the_run_after_round_timeout(tmp_path: Path, strategy: str) -> None:
    """Was a raw RuntimeError after round-timeout (built-in), or a wait forever (Flower's FedAvg)."""
    config = _config(tmp_path, **{"min-available-nodes": 5, "round-timeout": 0.2, "strategy": strategy,
                                  "algorithm": "rafbo"})
    errors: list[BaseException] = []

    def start() -> None:
        try:
            main(InProcessGrid(client_app, 2, config), _context(config))
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    server = threading.Thread(target=start, daemon=True)  # daemon: the old code never returns
    server.start()
    server.join(timeout=20)
    assert not server.is_alive(), "the run still waits for nodes"
    (error,) = errors
    assert isinstance(error, RunStopped)
    assert re.search(r"min-available-nodes=5 but only 2 node\(s\) connected within 0.2 s", str(error))


@pytest.mark.parametrize("key", ["results-dir", "resume-from", "data-dir", "device-profiles"])
def test_a_path_with_a_nul_byte_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' = .*contains a NUL byte"):
        parse_run_config({key: "runs/a\x00b"})
    with pytest.raises(ConfigError, match=f"'{key}' = .*longer than 255 bytes"):
        parse_run_config({key: "runs/" + "a" * 256})
    if key == "data-dir":
        with pytest.raises(ConfigError, match="'data-path' = .*contains a NUL byte"):
            parse_node_config({"data-path": "own\x00.npz"})


@pytest.mark.parametrize("target", ["keys/sn0", "keys/sn0.pub", "certs/server.key", "certs/ca.crt"])
def test_credentials_never_write_through_a_planted_symlink(tmp_path: Path, target: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "out" / target
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    with pytest.raises(FileExistsError, match="is a symbolic link"):
        write_certificates(tmp_path / "out" / "certs", ["127.0.0.1"])
        write_supernode_keys(tmp_path / "out" / "keys", ["sn0"])
    assert victim.read_text() == "precious"
    assert link.is_symlink()
    assert not [p for p in link.parent.iterdir() if p.name.endswith(".tmp")]
