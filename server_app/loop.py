"""The round loop: any Flower Message-API Strategy, from any round on (resume)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log

from rabo_strategy.contract import ServerFacing

from .metering import MeteredGrid
from .results import client_flops

Row = dict[str, float | int]


class IdleRun(RuntimeError):
    """``max-idle-rounds`` rounds in a row left the global model unchanged: the run stops."""


def client_row(rnd: int, reply: Message, traffic: dict[int, tuple[int, int]],
               ratios: Mapping[int, float] | None = None) -> Row:
    """One train reply as a row of clients.csv: node, the resource ratio it trained at (when the
    strategy says), bytes, and the numbers it reported."""
    node = reply.metadata.src_node_id
    down, up = traffic.get(node, (0, 0))
    row: Row = {}
    for record in reply.content.metric_records.values():  # finite numbers only
        row.update({k: v for k, v in record.items() if isinstance(v, (int, float))
                    and not isinstance(v, bool) and math.isfinite(v)})
    # the ratio and the identity columns are the server's: a client's metrics cannot overwrite them
    if ratios is not None and node in ratios:
        row["resource-ratio"] = ratios[node]
    row.update({"round": rnd, "node-id": node, "bytes-down": down, "bytes-up": up})
    return row


def run_rounds(
    strategy: ServerFacing, grid: MeteredGrid, arrays: ArrayRecord, rounds: range, *, timeout: float,
    train_timeout: float | None = None, evaluate: Callable[[int, ArrayRecord], MetricRecord],
    on_round_end: Callable[[int, ArrayRecord, Row, list[Row]], None], max_idle_rounds: int = 0,
) -> ArrayRecord:
    """Train, evaluate federatedly (if the strategy asks) and centrally, for each round.

    Like ``Strategy.start`` but it can start at any round, works with any Message-API Strategy
    that the server can record (:class:`~rabo_strategy.contract.ServerFacing`: a plug-in wrapped),
    and ``on_round_end`` receives the new global arrays, the round's metrics (train, federated
    and central evaluation, serialized bytes down/up, summed client FLOPs) and one row per
    client reply, so the caller can record and checkpoint them. Train replies are awaited
    ``train_timeout`` seconds (default ``timeout``: the round deadline plus grace, when there is
    one; ``train-round-seconds`` is how long the server waited); ``late-replies`` counts the
    replies that arrived after their round closed.
    A round whose ``aggregate_train`` returns no arrays (no valid reply, or too few, for any
    strategy) is idle; after ``max_idle_rounds`` idle rounds in a row (0: never) it raises
    :class:`IdleRun` once that round is recorded, rather than run on for every remaining round.
    Returns the final global arrays.
    """
    idle = 0
    for rnd in rounds:
        log(INFO, "[ROUND %d/%d]", rnd, rounds.stop - 1)
        grid.take()  # count this round's messages only
        messages = strategy.configure_train(rnd, arrays, ConfigRecord(), grid)
        started = time.perf_counter()
        replies = list(grid.send_and_receive(messages, timeout=train_timeout or timeout))
        train_seconds = time.perf_counter() - started
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = new_arrays
        idle = 0 if new_arrays is not None else idle + 1
        # the strategy's metrics may carry clients' averaged figures: the server's keys come last
        row: Row = {**dict(train_metrics or {}), "round": rnd, "train-round-seconds": train_seconds}
        messages = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid))
        if messages:
            federated = strategy.aggregate_evaluate(rnd, grid.send_and_receive(messages, timeout=timeout))
            row.update({f"federated-{k}": v for k, v in dict(federated or {}).items()})
        row.update(dict(evaluate(rnd, arrays)))
        traffic = grid.take()
        # rows for the replies the strategy accepted, with the ratio each trained at
        accepted = strategy.accepted_ratios
        clients = [client_row(rnd, r, traffic, accepted) for r in replies
                   if not r.has_error() and r.metadata.src_node_id in accepted]
        row["bytes-down"] = sum(down for down, _ in traffic.values())
        row["bytes-up"] = sum(up for _, up in traffic.values())
        row["client-flops"] = client_flops(clients)  # not a sum of what clients claim
        row["late-replies"] = grid.take_late()
        on_round_end(rnd, arrays, row, clients)
        if 0 < max_idle_rounds <= idle:
            raise IdleRun(
                f"rounds {rnd - idle + 1}-{rnd} all left the global model unchanged: no valid train reply "
                "(each failed, was rejected or came after round-timeout) or fewer than "
                "min-successful-replies; check the nodes' logs and round-timeout. max-idle-rounds="
                f"{max_idle_rounds} stops a run after so many such rounds in a row (0: never)")
    return arrays
