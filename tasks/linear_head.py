"""What the tasks share: a classifier whose y is a linear head on features phi_x of the inputs.

Given the features of a minibatch (``features``, a task's own), the outer loss and the test
metrics are the same for every task:

    logits = head_y(phi) = phi W^T + b        y = {head.weight W, head.bias b}
    f(x, y) = CE(head_y(phi_x(val inputs)), val labels)

and the inner loss adds the ridge term mu ||y||^2 that makes g strongly convex in y. A task
implements ``layers`` (or ``structure``) and ``build_model``, whose model returns its features with
``features_only=True``; it overrides ``features`` / ``inner_head_loss`` (and the per-sample
parameters) only where they differ, as hyper-cleaning does. :class:`LinearHeadTask` derives
the rest of :class:`~tasks.base.BilevelTask` and of the feature split
(:class:`~tasks.base.FeatureSplit`) from them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .base import Batch, LayerSpec, Params, cross_entropy
from .structure import Structure, as_structure


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """``test-accuracy``, ``test-loss`` (cross-entropy) and, per class c present in ``labels``,
    ``class-accuracy-c`` (recall: which classes the model has learned, e.g. under label skew), and,
    of the centred logit of class c (logit c minus the sample's mean logit) over all samples, its
    mean ``class-logit-c`` (the head's bias toward c) and its root mean square
    ``class-logit-scale-c`` (how loud c's logit is: a row fitted at a smaller width and read at the
    full one is louder than the rest)."""
    correct = logits.argmax(dim=1) == labels
    metrics = {"test-accuracy": float(correct.float().mean()),
               "test-loss": float(F.cross_entropy(logits, labels))}
    centred = logits - logits.mean(dim=1, keepdim=True)
    bias, scale = centred.mean(dim=0), centred.square().mean(dim=0).sqrt()
    for c in torch.unique(labels).tolist():
        metrics[f"class-accuracy-{c}"] = float(correct[labels == c].float().mean())
        metrics[f"class-logit-{c}"] = float(bias[c])
        metrics[f"class-logit-scale-{c}"] = float(scale[c])
    return metrics


class LinearHeadTask:
    """The shared half of a task whose network is ``features`` then a linear ``head`` (y).

    A mixin of the task dataclasses; it relies on their ``layers``, ``sample_params``, ``mu``,
    ``features`` and ``inner_head_loss``.
    """

    layers: tuple[LayerSpec, ...]
    mu: float

    @property
    def sample_params(self) -> tuple[str, ...]:
        """No per-sample parameters (a task with them overrides these three)."""
        return ()

    @property
    def num_samples(self) -> int:
        return 0

    def sample_coords(self, partition_id: int, num_partitions: int) -> dict[str, np.ndarray]:
        return {}

    def features(self, model: nn.Module, x: Params, batch: Batch) -> Tensor:
        """phi_x(batch): the model's ``features_only`` output at x (it does not depend on y)."""
        return functional_call(model, x, (batch.inputs,), {"features_only": True}, strict=False)

    def inner_head_loss(self, model: nn.Module, x: Params, y: Params, features: Tensor,
                        batch: Batch) -> Tensor:
        """g given the features: CE of the linear head + mu ||y||^2."""
        return cross_entropy(self.head_logits(y, features), batch) + self.ridge(y)

    @property
    def structure(self) -> Structure:
        """The network's unit groups: its layer chain."""
        return as_structure(self.layers)

    def full_widths(self) -> dict[str, int]:
        """Widths of the full (unpruned) model."""
        return {layer.name: layer.width for layer in self.layers}

    def _layer_params(self, x: Params) -> Params:
        """x without its per-sample params: the parameters of the network's layers."""
        return {k: t for k, t in x.items() if k not in self.sample_params}

    def _logits(self, model: nn.Module, x: Params, y: Params, inputs: Tensor) -> Tensor:
        return functional_call(model, {**self._layer_params(x), **y}, (inputs,))

    @staticmethod
    def head_logits(y: Params, features: Tensor) -> Tensor:
        """head_y(phi) = phi W^T + b."""
        return F.linear(features, y["head.weight"], y["head.bias"])

    def ridge(self, y: Params) -> Tensor:
        """mu ||y||^2: adds 2 mu I to H_yy, so g is strongly convex in y when its CE is convex."""
        return self.mu * sum(torch.sum(p * p) for p in y.values())

    def outer_head_loss(self, model: nn.Module, x: Params, y: Params, features: Tensor,
                        batch: Batch) -> Tensor:
        """f given the features: CE of the linear head."""
        return cross_entropy(self.head_logits(y, features), batch)

    def inner_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.inner_head_loss(model, x, y, self.features(model, x, batch), batch)

    def outer_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.outer_head_loss(model, x, y, self.features(model, x, batch), batch)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> float:
        return classification_metrics(self._logits(model, x, y, batch.inputs), batch.labels)["test-accuracy"]

    def x_metrics(self, x: Params) -> dict[str, float]:
        """Metrics of the global x itself, added to :meth:`evaluate`'s (none by default)."""
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> dict[str, float]:
        """Test accuracy, loss and per-class accuracy of the global (x, y) on ``batch``, then
        :meth:`x_metrics`."""
        extra = self.x_metrics(x)
        return {**classification_metrics(self._logits(model, x, y, batch.inputs), batch.labels), **extra}

