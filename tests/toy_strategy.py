"""A user's own strategy, for the import-path plug-in test: FedAvg over every node, no evaluation."""

from __future__ import annotations

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


NOT_A_STRATEGY = object
