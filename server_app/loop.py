"""The round loop: any Flower Message-API Strategy, from any round on (resume)."""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

Row = dict[str, float | int]


def run_rounds(
    strategy: Strategy, grid: Grid, arrays: ArrayRecord, rounds: range, *, timeout: float,
    evaluate: Callable[[int, ArrayRecord], MetricRecord],
    on_round_end: Callable[[int, ArrayRecord, Row], None],
) -> ArrayRecord:
    """Train, evaluate federatedly (if the strategy asks) and centrally, for each round.

    Like ``Strategy.start`` but it can start at any round, and ``on_round_end`` receives the new
    global arrays and the round's metrics (train, federated and central evaluation) so the caller
    can record and checkpoint them. Returns the final global arrays.
    """
    for rnd in rounds:
        log(INFO, "[ROUND %d/%d]", rnd, rounds.stop - 1)
        replies = grid.send_and_receive(
            strategy.configure_train(rnd, arrays, ConfigRecord(), grid), timeout=timeout)
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        if new_arrays is not None:
            arrays = new_arrays
        row: Row = {"round": rnd, **dict(train_metrics or {})}
        messages = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid))
        if messages:
            federated = strategy.aggregate_evaluate(rnd, grid.send_and_receive(messages, timeout=timeout))
            row.update({f"federated-{k}": v for k, v in dict(federated or {}).items()})
        row.update(dict(evaluate(rnd, arrays)))
        on_round_end(rnd, arrays, row)
    return arrays
