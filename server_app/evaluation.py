"""Centralised evaluation of the global model on the server's held-out test set, at full width and
at the width each ratio of the run deploys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from rabo_protocol.wire import unpack
from rabo_pruning import submodel_spec
from tasks import Batch, BilevelTask
from tasks.network import running_statistics

Parts = Mapping[str, Mapping[str, np.ndarray]]


class Evaluator:
    """Evaluates the global (x, y) on the test set: test-accuracy, test-loss and the task's own
    metrics (hyper-cleaning: detection precision, recall and F1 of the corrupted samples), then,
    for each ratio r < 1 of ``ratios``, ``test-accuracy@<r>`` and ``test-loss@<r>`` of the submodel
    a device at r deploys: the leading units of every group (the ``static`` mask, the same
    network for every mask policy; see ``rabo_strategy.node_eval``).
    """

    def __init__(self, task: BilevelTask, test: Batch, device: torch.device,
                 ratios: Sequence[float] = ()) -> None:
        self.task = task
        self.test = test.to(device)
        self.device = device
        self.model = task.build_model(task.full_widths()).to(device)
        self.submodels = {}
        for ratio in sorted({r for r in ratios if r < 1.0}, reverse=True):
            spec = submodel_spec(task.structure, ratio)
            self.submodels[ratio] = (spec, task.build_model(spec.widths(task.structure)).to(device))

    def _tensors(self, part: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(a), device=self.device) for k, a in part.items()}

    def _evaluate(self, model: torch.nn.Module, parts: Parts) -> dict[str, float]:
        return self.task.evaluate(model, self._tensors(parts["x"]), self._tensors(parts["y"]), self.test)

    @torch.no_grad()
    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        parts = unpack(arrays)
        metrics = self._evaluate(self.model, parts)
        for ratio, (spec, model) in self.submodels.items():
            at = self._evaluate(model, spec.take(self.task.structure, parts))
            metrics |= {f"test-{key}@{ratio:g}": at[f"test-{key}"] for key in ("accuracy", "loss")}
        return MetricRecord(metrics)

    @torch.no_grad()
    def statistics(self, widths: Mapping[str, int], x: Mapping[str, np.ndarray],
                   y: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The BatchNorm statistics of the submodel at ``widths`` with (x, y), on the test inputs
        (``norm-stats='recalibrate'``: what the server sends with a node's evaluate message)."""
        model = self.task.build_model(widths).to(self.device)
        stats = running_statistics(model, {**self._tensors(x), **self._tensors(y)}, self.test.inputs)
        return {k: t.cpu().numpy() for k, t in stats.items()}
