"""Real `flwr run` from scripts: a private FLWR_HOME and SuperLink port, status checked with `flwr list`.

`flwr run` exits 0 even when the run failed, so :meth:`Session.run` waits for the run and reads its
status. The detached local SuperLink that `flwr run` starts is stopped when the session closes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLWR = str(Path(sys.executable).parent / "flwr")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Session:
    env: dict[str, str]
    home: Path

    def cli(self, *args: str) -> dict:
        out = subprocess.run([FLWR, *args, "--format", "json"], env=self.env, cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=300).stdout
        return json.loads(out)

    def run(self, run_config: str, num_supernodes: int, *, timeout: float = 3600,
            poll: Callable[[], None] | None = None) -> dict:
        """Submit, wait until finished (calling ``poll`` every second); returns the `flwr list` entry."""
        run_id = self.cli("run", ".", "--federation-config",
                          f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
                          "--run-config", run_config)["run-id"]
        deadline = time.monotonic() + timeout
        while True:
            if poll is not None:
                poll()
            entry = self.cli("list", "--run-id", run_id)["runs"][0]
            if entry["status"].startswith("finished") or time.monotonic() > deadline:
                return {**entry, "run-id": run_id}
            time.sleep(1)


@contextmanager
def session() -> Iterator[Session]:
    """A private Flower home and SuperLink port; the SuperLink is stopped on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "flwr-home"
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
               "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
               "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
               # the repository on the path of the SuperLink's processes: plug-ins such as
               # tests.toy_strategy import there (the FAB itself ships only the app packages)
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            yield Session(env, home)
        finally:
            subprocess.run(["pkill", "-TERM", "-f", f"flower-superlink.*{home}"], check=False)
