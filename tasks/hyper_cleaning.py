"""Federated data hyper-cleaning.

A fraction of the training labels is corrupted. x = one logit per training sample (its weight is
sigmoid(logit)), y = an MLP classifier. Each client holds the logits of its own training samples.

    g(x, y) = mean_i sigmoid(x_i) * CE(mlp_y(train input i), noisy label i) + mu * ||y||^2
    f(x, y) = CE(mlp_y(val inputs), clean val labels)

Minimising f over x down-weights the samples whose labels disagree with the clean validation
data: after training, a sample with sigmoid(x_i) < 0.5 is flagged as corrupted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .base import Batch, LayerSpec, Params, classification_metrics, split_params
from .partition import DataSpec, corrupted_mask, num_train_samples, train_coordinates

LOGIT = "sample.logit"


class MLP(nn.Module):
    """flatten, dense-relu-layernorm (parameter-free), linear head."""

    def __init__(self, in_shape: tuple[int, int, int], widths: Mapping[str, int],
                 num_classes: int) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.fc1 = nn.Linear(channels * height * width, widths["fc1"])
        self.head = nn.Linear(widths["fc1"], num_classes)
        nn.init.kaiming_normal_(self.fc1.weight, nonlinearity="relu")  # He init
        nn.init.zeros_(self.fc1.bias)

    def forward(self, inputs: Tensor) -> Tensor:
        # Parameter-free layer norm: features of the same scale at every width (see
        # tasks/hyper_representation.py).
        features = F.relu(self.fc1(inputs.flatten(1)))
        return self.head(F.layer_norm(features, features.shape[1:]))


def detection_metrics(logits: Tensor | np.ndarray, corrupted: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of flagging sample i as corrupted iff sigmoid(logit_i) < 0.5.

    Precision is 0 when nothing is flagged, recall 0 when nothing is corrupted.
    """
    values = logits.detach().cpu().numpy() if isinstance(logits, Tensor) else np.asarray(logits)
    flagged = values < 0.0  # sigmoid(l) < 0.5  <=>  l < 0
    truth = np.asarray(corrupted, dtype=bool)
    if flagged.shape != truth.shape:
        raise ValueError(f"{LOGIT} has shape {flagged.shape}, the corrupted mask {truth.shape}")
    hits = int(np.sum(flagged & truth))
    precision = hits / int(flagged.sum()) if flagged.any() else 0.0
    recall = hits / int(truth.sum()) if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"detection-precision": precision, "detection-recall": recall, "detection-f1": f1}


@dataclass(frozen=True)
class HyperCleaning:
    """The task; ``in_shape`` and ``num_classes`` come from the dataset.

    ``spec`` (the run's data) is needed only by the server-side methods that know the global
    training set: :attr:`num_samples`, :meth:`owned_indices` and the detection metrics of
    :meth:`evaluate`. Clients build the task without it.
    """

    in_shape: tuple[int, int, int]
    num_classes: int
    mu: float = 1e-3
    hidden: int = 128
    spec: DataSpec | None = None

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return (
            LayerSpec("fc1", "y", self.hidden, prunable=True),
            LayerSpec("head", "y", self.num_classes, prunable=False),
        )

    @property
    def sample_params(self) -> tuple[str, ...]:
        return (LOGIT,)

    def _spec(self, what: str) -> DataSpec:
        if self.spec is None:
            raise ValueError(f"HyperCleaning.{what} needs the run's DataSpec: build the task with "
                             f"tasks.make_task(name, spec, mu) (build_task gives none)")
        return self.spec

    @property
    def num_samples(self) -> int:
        return num_train_samples(self._spec("num_samples"))

    def full_widths(self) -> dict[str, int]:
        return {layer.name: layer.width for layer in self.layers}

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        return MLP(self.in_shape, widths, self.num_classes)

    def init_params(self, widths: Mapping[str, int], num_samples: int) -> tuple[Params, Params]:
        _, y = split_params(self.build_model(widths), self.layers)
        return {LOGIT: torch.zeros(num_samples)}, y

    def owned_indices(self, partition_id: int, num_partitions: int) -> dict[str, np.ndarray]:
        spec = replace(self._spec("owned_indices"), num_partitions=num_partitions)
        return {LOGIT: train_coordinates(spec, partition_id)}

    @staticmethod
    def _logits(model: nn.Module, y: Params, inputs: Tensor) -> Tensor:
        return functional_call(model, y, (inputs,))

    def inner_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        if batch.ids is None:
            raise ValueError("hyper-cleaning's inner loss needs Batch.ids (the positions of the "
                             "samples in the client's train split; MinibatchSampler sets them)")
        losses = F.cross_entropy(self._logits(model, y, batch.inputs), batch.labels, reduction="none")
        weights = torch.sigmoid(x[LOGIT][batch.ids])
        return torch.mean(weights * losses) + self.mu * sum(torch.sum(p * p) for p in y.values())

    def outer_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        return F.cross_entropy(self._logits(model, y, batch.inputs), batch.labels)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> float:
        return classification_metrics(self._logits(model, y, batch.inputs), batch.labels)["test-accuracy"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> dict[str, float]:
        """Test accuracy and loss; detection metrics of the global ``x`` (one logit per global
        training sample) against the true corrupted mask."""
        corrupted = corrupted_mask(self._spec("evaluate"))
        if x[LOGIT].numel() != len(corrupted):
            raise ValueError(f"evaluate needs the global x: {LOGIT} has {x[LOGIT].numel()} entries, "
                             f"the global training set {len(corrupted)}")
        return {**classification_metrics(self._logits(model, y, batch.inputs), batch.labels),
                **detection_metrics(x[LOGIT].reshape(-1), corrupted)}
