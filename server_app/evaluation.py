"""Centralised evaluation of the global model on the server's held-out test set."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from rabo_protocol.wire import unpack
from tasks import Batch, BilevelTask


class Evaluator:
    """Evaluates the global (x, y) on the test set: test-accuracy, test-loss and the task's own
    metrics (hyper-cleaning: detection precision, recall and F1 of the corrupted samples)."""

    def __init__(self, task: BilevelTask, test: Batch, device: torch.device) -> None:
        self.task = task
        self.test = test.to(device)
        self.device = device
        self.model = task.build_model(task.full_widths()).to(device)

    @torch.no_grad()
    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        parts = unpack(arrays)
        x, y = ({k: torch.as_tensor(np.asarray(a), device=self.device) for k, a in parts[p].items()}
                for p in ("x", "y"))
        return MetricRecord(self.task.evaluate(self.model, x, y, self.test))
