"""The server's own update, computed while the nodes train.

The agreement screen's server reference (server_app/reference.py) is a full-width local round on
the server's root set from the model the server sends: it depends on nothing a node replies. Run
when the round is aggregated, it held every round up by its whole cost (1.35 s of the 2 s a round
of the wall-clock benchmark spent between rounds, docs/results.md section 10). :class:`UpdateAhead`
starts it in a worker thread when the train messages go out, and aggregation only waits for what
is left of it. The update is the same either way: the reference draws its minibatches from its own
seeded generators, and the model it builds has every parameter overwritten by the sent ones.

The worker runs at the lowest priority (Linux: nice 19, a thread's own there), so that it takes the
CPU the round leaves: the server's own message handling comes first, and where the nodes share the
server's host (a simulation, the benchmark's throttled SuperNodes) so do they. At normal priority,
on the 2-core benchmark host, the update took 1.6 to 2.7 s in the worker against 1.35 s alone, at
the start of every round, while the fastest nodes trained.

Example:
    >>> import numpy as np
    >>> def double(sent, server_round):
    ...     return {"x": {k: 2 * v for k, v in sent["x"].items()}}
    >>> ahead = UpdateAhead(double)
    >>> sent = {"x": {"w": np.ones(3)}}
    >>> ahead.start(sent, 1)  # with the train messages
    >>> ahead(sent, 1)["x"]["w"].tolist(), ahead.seconds >= 0
    ([2.0, 2.0, 2.0], True)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

__all__ = ["ServerUpdate", "UpdateAhead"]

Parts = Mapping[str, Mapping[str, np.ndarray]]
ServerUpdate = Callable[[Parts, int], Parts]
"""The global (x, y, v) and the round -> the server's own update by reply part (full shapes)."""


class UpdateAhead:
    """``ahead(sent, server_round)``: ``update(sent, server_round)``, from the computation
    :meth:`start` began for the same ``sent`` object and round, else computed now.

    Args:
        update: the server's update (``ServerReference``); it must not read or change state that
            the nodes' work in the same process changes (the in-process grid runs them alongside).
    """

    def __init__(self, update: ServerUpdate) -> None:
        self.update = update
        self.seconds = 0.0
        """Seconds the last update took to compute (in the worker thread when started ahead)."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-update", initializer=_idle)
        self._started: tuple[int, Parts, Future[tuple[Parts, float]]] | None = None

    def start(self, sent: Parts, server_round: int) -> None:
        """Begin the update to ``sent`` (kept by reference: the caller must not change it) for
        ``server_round``; one started before and never asked for is discarded when it ends."""
        self._started = (server_round, sent, self._pool.submit(self._timed, sent, server_round))

    def __call__(self, sent: Parts, server_round: int) -> Parts:
        started, self._started = self._started, None
        if started is not None and started[0] == server_round and started[1] is sent:
            update, self.seconds = started[2].result()  # re-raises what the worker raised
        else:
            update, self.seconds = self._timed(sent, server_round)
        return update

    def _timed(self, sent: Parts, server_round: int) -> tuple[Parts, float]:
        start = time.perf_counter()
        update = self.update(sent, server_round)
        return update, time.perf_counter() - start


def _idle() -> None:
    """Lower the calling thread to the lowest priority where a thread has its own (Linux)."""
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
