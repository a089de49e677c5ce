"""A real, secured localhost deployment: SuperLink + 3 SuperNodes with TLS and SuperNode
authentication, each with its own budget; an unregistered SuperNode is refused."""

from __future__ import annotations

import csv
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from client_app.budget import peak_memory_bytes
from deploy.credentials import write_certificates, write_supernode_keys
from deploy.processes import flwr_json, stop
from rabo_protocol import parse_run_config
from tasks import client_data, make_task

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _flwr(env: dict[str, str], *args: str) -> dict:
    return flwr_json(env, *args, cwd=ROOT, timeout=120)


def _memory_between_quarter_and_half() -> float:
    """A memory-mb budget that fits ratio 1/4 but not 1/2 (measured like the node will)."""
    cfg = parse_run_config({"dataset": "sklearn-digits"})
    spec = cfg.data_spec(3)
    task, data = make_task(cfg.task, spec, cfg.mu), client_data(spec, 1)
    half, quarter = (peak_memory_bytes(task, data, cfg, r) / 2**20 for r in (0.5, 0.25))
    return round((half + quarter) / 2, 3)


def test_secured_deployment(tmp_path: Path) -> None:
    certs, keys, logs = tmp_path / "certs", tmp_path / "keys", tmp_path / "logs"
    write_certificates(certs, ["127.0.0.1", "::1", "localhost"])
    write_supernode_keys(keys, ["sn0", "sn1", "sn2", "rogue"])
    logs.mkdir()
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    link_port, *node_ports = _free_ports(5)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "secure"\n\n[superlink.secure]\naddress = "127.0.0.1:{link_port}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n')
    budgets = ["resource-ratio=1.0", f"memory-mb={_memory_between_quarter_and_half()}",
               "resource-ratio=0.5"]
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=ROOT,
                                   stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def supernode(name: str, port: int, node_config: str) -> subprocess.Popen:
        return start(name, "flower-supernode", "--root-certificates", str(certs / "ca.crt"),
                     "--superlink", f"127.0.0.1:{link_port}", "--port", str(port),
                     "--auth-supernode-private-key", str(keys / name), "--node-config", node_config)

    try:
        start("superlink", "flower-superlink", "--ssl-ca-certfile", str(certs / "ca.crt"),
              "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
              "--enable-supernode-auth", "--host", "127.0.0.1", "--port", str(link_port))
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        for _ in range(100):
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{link_port}/health", context=context)
                break
            except OSError:
                time.sleep(0.3)
        for i in range(3):
            _flwr(env, "supernode", "register", str(keys / f"sn{i}.pub"), "secure")
            supernode(f"sn{i}", node_ports[i], f"partition-id={i} num-partitions=3 {budgets[i]}")

        rogue = supernode("rogue", node_ports[3], "partition-id=0 num-partitions=3")
        assert rogue.wait(timeout=90) != 0  # refused at once: it exits, it does not retry
        assert "Failed to initialize the connection to the SuperLink" in (logs / "rogue.log").read_text()

        results = tmp_path / "results"
        run_id = _flwr(env, "run", ".", "secure", "--run-config",
                       f"num-server-rounds=2 dataset='sklearn-digits' results-dir='{results}'")["run-id"]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            entry = _flwr(env, "list", "--run-id", run_id, "secure")["runs"][0]
            if entry["status"].startswith("finished"):
                break
            time.sleep(3)
        assert entry["status"] == "finished:completed", entry.get("status-details")
        assert len(_flwr(env, "supernode", "list", "secure")["nodes"]) == 3  # the rogue never joined

        (run_dir,) = results.iterdir()
        with (run_dir / "clients.csv").open() as handle:
            trained = {(int(r["partition-id"]), float(r["resource-ratio"])) for r in csv.DictReader(handle)}
        assert trained == {(0, 1.0), (1, 0.25), (2, 0.5)}  # each node at its own ratio
        sources = {n["partition_id"]: n["source"]
                   for n in json.loads((run_dir / "summary.json").read_text())["nodes"]}
        assert sources == {0: "node-config", 1: "memory-mb", 2: "node-config"}
        rows = json.loads((run_dir / "metrics.json").read_text())
        assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.1
    finally:
        stop(processes)  # SuperNodes first, the SuperLink last
