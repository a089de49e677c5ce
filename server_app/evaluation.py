"""Centralised evaluation of the global model on the server's held-out test set."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from rabo_protocol.wire import unpack
from tasks import Batch, BilevelTask
from tasks.network import running_statistics


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

    @torch.no_grad()
    def statistics(self, widths: Mapping[str, int], x: Mapping[str, np.ndarray],
                   y: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The BatchNorm statistics of the submodel at ``widths`` with (x, y), on the test inputs
        (``norm-stats='recalibrate'``: what the server sends with a node's evaluate message)."""
        model = self.task.build_model(widths).to(self.device)
        params = {k: torch.as_tensor(np.asarray(a), device=self.device) for part in (x, y)
                  for k, a in part.items()}
        stats = running_statistics(model, params, self.test.inputs)
        return {k: t.cpu().numpy() for k, t in stats.items()}
