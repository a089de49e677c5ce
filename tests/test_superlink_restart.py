"""A SuperLink killed mid-run and started again on its state database (``--database``, as
deploy/localhost.sh starts it): the run is still listed, ends with a clear status, and the operator
resumes it from its checkpoint with ``resume-from`` (docs/deployment.md, "When the SuperLink restarts").

Flower 1.42 does not carry a running ServerApp over a SuperLink restart: the ServerApp stops when
its SuperLink dies, and the run ends ``finished:failed``, with one of two details: the ServerApp's
own report if it reaches the restarted SuperLink before it gives up, else the SuperLink's verdict
once the ServerApp's last heartbeat expires (at most 60 s after it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.flwr_config import set_connection
from deploy.processes import flwr_json, stop, stop_strays, strays
from tests.test_deployment import _free_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e
RUN_CONFIG = ("num-server-rounds=2 dataset='sklearn-digits' inner-steps=2 v-steps=2 outer-steps=1 "
              "profile=false")
FAILED_DETAILS = ("Task failed with unknown error.", "No heartbeat received from the task")


def _flwr(env: dict[str, str], *args: str) -> dict:
    return flwr_json(env, *args, cwd=ROOT, timeout=300)


def _wait(condition: Callable[[], bool], what: str, timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


def test_a_run_survives_a_superlink_restart_as_failed_and_resumes(tmp_path: Path) -> None:
    home, logs, results = tmp_path / "flwr-home", tmp_path / "logs", tmp_path / "results"
    logs.mkdir()
    link_port, *node_ports = _free_ports(3)
    set_connection(home / "config.toml", "restart", f"127.0.0.1:{link_port}")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        with (logs / f"{name}.log").open("a") as log:
            process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    def superlink() -> subprocess.Popen:
        link = start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port",
                     str(link_port), "--database", str(tmp_path / "state.db"))

        def healthy() -> bool:
            assert link.poll() is None, (logs / "superlink.log").read_text()[-2000:]
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{link_port}/health", timeout=5).status == 200
            except OSError:
                return False
        _wait(healthy, "the SuperLink healthy", 120, every=0.3)
        return link

    def finished(run_id: str, timeout: float) -> dict:
        entries: list[dict] = []

        def done() -> bool:
            entries[:] = _flwr(env, "list", "restart", "--run-id", run_id)["runs"]
            assert [e["run-id"] for e in entries] == [run_id]  # listed all along
            return entries[0]["status"].startswith("finished")
        _wait(done, f"run {run_id} finished", timeout, every=3)
        return entries[0]

    try:
        link = superlink()
        for i, port in enumerate(node_ports):
            start(f"sn{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                  "--port", str(port), "--node-config", f"partition-id={i} num-partitions=2")
        run_id = _flwr(env, "run", ".", "restart", "--run-config",
                       f"{RUN_CONFIG} results-dir='{results}'")["run-id"]
        _wait(lambda: any(results.glob("*/checkpoint.pt")), "round 1 checkpointed", 900, every=0.3)
        link.kill()  # a crash mid-run: round 2 is under way
        link.wait(timeout=60)
        killed = time.monotonic()
        superlink()
        entry = finished(run_id, 300)
        print(f"run {run_id}: {entry['status']} ({entry.get('status-details')}) "
              f"{time.monotonic() - killed:.0f} s after the kill")
        assert entry["status"] == "finished:failed", entry
        assert entry["status-details"] in FAILED_DETAILS, entry

        (run_dir,) = results.iterdir()  # resume as the README says, once the old ServerApp is gone
        _wait(lambda: "flwr-serverapp" not in strays([f"127.0.0.1:{link_port}"]).values(),
              "the killed SuperLink's ServerApp exited", 120)
        resumed = _flwr(env, "run", ".", "restart", "--run-config",
                        f"{RUN_CONFIG} resume-from='{run_dir}'")["run-id"]
        entry = finished(resumed, 600)
        assert entry["status"] == "finished:completed", entry.get("status-details")
        rows = json.loads((run_dir / "metrics.json").read_text())
        assert [r["round"] for r in rows] == [0, 1, 2]
        listed = {e["run-id"]: e["status"] for e in _flwr(env, "list", "restart")["runs"]}
        assert listed == {run_id: "finished:failed", resumed: "finished:completed"}
    finally:
        stop(processes)  # SuperNodes first, the SuperLink last
        stop_strays([f"127.0.0.1:{port}" for port in (link_port, *node_ports)])
