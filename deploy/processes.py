"""Stop the Flower processes a script or test started: SuperNodes first, the SuperLink last."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

__all__ = ["stop"]


def stop(processes: Sequence[subprocess.Popen], timeout: float = 30.0) -> None:
    """Terminate ``processes`` in reverse start order, wait ``timeout`` s for each, then kill it."""
    for process in reversed(processes):
        process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
