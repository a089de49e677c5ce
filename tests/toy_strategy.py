"""A user's own strategy, for the import-path plug-in test: FedAvg over every node, no evaluation."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from rabo_protocol import RunConfig
from tasks import BilevelTask


class ToyAverage(FedAvg):
    """Plain FedAvg of the models the nodes return; built from the run config."""

    @classmethod
    def from_run_config(cls, cfg: RunConfig, task: BilevelTask) -> ToyAverage:
        return cls(fraction_train=cfg.fraction_train, fraction_evaluate=0.0,
                   min_train_nodes=cfg.min_train_nodes, min_available_nodes=cfg.min_available_nodes)


class NoArguments(FedAvg):
    """Built with ``NoArguments()``."""

    def __init__(self) -> None:
        super().__init__(fraction_evaluate=0.0)


class CountingAverage(NoArguments):
    """A plug-in with state of its own (:class:`rabo_strategy.contract.Stateful`): the rounds it
    aggregated, which a checkpoint keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.rounds += 1
        return super().aggregate_train(server_round, replies)

    def state(self) -> dict[str, object]:
        return {"rounds": self.rounds}

    def load_state(self, state: dict[str, object]) -> None:
        self.rounds = int(state["rounds"])  # type: ignore[call-overload]


NOT_A_STRATEGY = object
