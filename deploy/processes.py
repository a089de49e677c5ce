"""Stop the Flower processes a script or test started: SuperNodes first, the SuperLink last."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["flwr_json", "stop", "stop_strays", "strays"]


def flwr_json(env: dict[str, str], *args: str, cwd: Path, timeout: float = 300.0) -> dict:
    """``flwr <args> --format json`` (the ``flwr`` beside this Python) parsed; RuntimeError when it
    says ``"success": false``, since ``flwr`` exits 0 even then."""
    out = subprocess.run([str(Path(sys.executable).parent / "flwr"), *args, "--format", "json"], env=env,
                         cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout).stdout
    data = json.loads(out)
    if not data.get("success"):
        raise RuntimeError(f"flwr {' '.join(args)}: {data}")
    return data


def stop(processes: Sequence[subprocess.Popen], timeout: float = 30.0) -> None:
    """Terminate ``processes`` in reverse start order, wait ``timeout`` s for each, then kill it."""
    for process in reversed(processes):
        process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def strays(addresses: Sequence[str]) -> dict[int, str]:
    """{PID: program} of the Flower processes whose command line names one of ``addresses``
    (host:port), such as ``flwr-serverapp --runtime-api-address 127.0.0.1:9200`` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        programs = [Path(arg).name for arg in argv[:2] if Path(arg).name.startswith(("flwr-", "flower-"))]
        if programs and any(address in argv for address in addresses):
            found[int(entry.name)] = programs[0]
    return found


def stop_strays(addresses: Sequence[str], timeout: float = 30.0) -> list[int]:
    """Stop what Flower started for ``addresses`` and left behind: a SuperLink that is killed leaves
    its ServerApp running until that gives up reporting to it, and a SuperNode's helper outlives the
    SuperNode for a moment. SIGTERM, ``timeout`` s, then SIGKILL; returns the PIDs found."""
    pids = list(strays(addresses))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in strays(addresses) if pid in pids]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
