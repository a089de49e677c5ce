"""Centralised evaluation of the global model on the server's held-out test set."""

from __future__ import annotations

import time
from logging import INFO

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.common.logger import log

from rabo_strategy.wire import unpack
from tasks import Batch, BilevelTask


class Evaluator:
    """``evaluate_fn`` for ``Strategy.start``; also keeps the wall clock of every round."""

    def __init__(self, task: BilevelTask, test: Batch, device: torch.device, num_rounds: int) -> None:
        self.task = task
        self.test = test.to(device)
        self.device = device
        self.num_rounds = num_rounds
        self.model = task.build_model(task.full_widths()).to(device)
        self.start = time.perf_counter()
        self.elapsed: dict[int, float] = {}

    @torch.no_grad()
    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        parts = unpack(arrays)
        x, y = ({k: torch.as_tensor(np.asarray(a), device=self.device) for k, a in parts[p].items()}
                for p in ("x", "y"))
        loss = float(self.task.outer_loss(self.model, x, y, self.test))
        accuracy = self.task.accuracy(self.model, x, y, self.test)
        self.elapsed[server_round] = time.perf_counter() - self.start
        log(INFO, "round %d/%d: test accuracy %.4f, test loss %.4f (%.1f s)", server_round,
            self.num_rounds, accuracy, loss, self.elapsed[server_round])
        return MetricRecord({"test-accuracy": accuracy, "test-loss": loss})
