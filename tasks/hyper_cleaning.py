"""Federated data hyper-cleaning.

A fraction of the training labels is corrupted. x = one logit per training sample (its weight is
sigmoid(logit)) and a fixed random feature layer; y = a linear classifier on those features. Each
client holds the logits of its own training samples.

    phi(input)   = layer_norm(relu(fc1(flatten(input))))          fc1: seeded He init, never trained
    g(x, y)      = mean_i sigmoid(x_i) * CE(head_y(phi(train input i)), noisy label i) + mu * ||y||^2
    f(x, y)      = CE(head_y(phi(val inputs)), clean val labels)

Minimising f over x down-weights the samples whose labels disagree with the clean validation
data: after training, a sample with sigmoid(x_i) < 0.5 is flagged as corrupted.

**f needs clean labels.** Each client's validation split (``val-fraction`` of its pool samples,
labels never corrupted) is its only clean data. A client whose partition holds no validation
sample is refused when label-noise > 0 (tasks.partition.client_data raises ValueError naming
val-fraction, so the node is left out at its profile query): it never computes f on its noisy
training labels, which would teach x to trust them.

**Coverage.** Each sample weight has one owner, who alone receives and returns it, so the round's
``coverage-x-min`` (over every x coordinate) is 1 when every owner replied and 0 when one sat out;
the mask placement sees fc1 only (rabo_pruning.placement, "Per-sample parameters").

**Why the hidden layer is a fixed random feature map.** The bilevel methods need g strongly convex
in y (tasks/base.py: v = H_yy^{-1} grad_y f must exist, and the finite-difference products assume
a smooth g). The standard benchmark uses a linear classifier; a hidden layer is kept here so that
submodels still prune something (a client at ratio r computes r of the hidden units), but where it
lives matters:

* in y (trained by the inner problem), g is not convex: a ReLU MLP's H_yy has negative
  eigenvalues (about -1.7 at initialisation, still -0.085 after 300 inner steps at mu = 0.01) and
  its ReLU units flip between y - d v and y + d v, so the finite-difference products are wrong;
* in x and trained by the outer problem, the representation would be learnt from the clean
  validation split, and "cleaning beats no cleaning" would partly measure that extra training
  signal, not the cleaning;

so fc1 is an x parameter that nobody trains: both losses read it **detached**, its hypergradient is
exactly zero, RABO's server step and RAFBO's local steps leave it unchanged and it keeps its seeded
initial value (it is sent sliced with the submodel like any layer). y is then the linear head
alone, and g, a convex cross-entropy of a linear function of y plus mu ||y||^2, is strongly convex
in y with H_yy >= 2 mu I (tests/test_hyper_cleaning_convexity.py measures its eigenvalues on
MNIST).

The losses are declared with their feature split (``features`` and the ``*_head_loss`` methods,
tasks/base.py ``FeatureSplit``): y-only work reuses phi of a minibatch (bilevel.split).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .base import Batch, LayerSpec, Params, cross_entropy, split_params
from .linear_head import LinearHeadTask
from .partition import DataSpec, corrupted_mask, num_train_samples, train_coordinates

LOGIT = "sample.logit"


class RandomFeatureClassifier(nn.Module):
    """flatten, dense-relu-layernorm (parameter-free; the features), linear head."""

    def __init__(self, in_shape: tuple[int, int, int], widths: Mapping[str, int],
                 num_classes: int) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.fc1 = nn.Linear(channels * height * width, widths["fc1"])
        self.head = nn.Linear(widths["fc1"], num_classes)
        nn.init.kaiming_normal_(self.fc1.weight, nonlinearity="relu")  # He init
        nn.init.zeros_(self.fc1.bias)

    def features(self, inputs: Tensor) -> Tensor:
        # Parameter-free layer norm: features of the same scale at every width (see
        # tasks/hyper_representation.py), so one inner step size suits every submodel.
        hidden = F.relu(self.fc1(inputs.flatten(1)))
        return F.layer_norm(hidden, hidden.shape[1:])

    def forward(self, inputs: Tensor, *, features_only: bool = False) -> Tensor:
        features = self.features(inputs)
        return features if features_only else self.head(features)


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
class HyperCleaning(LinearHeadTask):
    """The task; ``in_shape`` and ``num_classes`` come from the dataset.

    ``spec`` (the run's data) is needed only by the server-side methods that know the global
    training set: :attr:`num_samples`, :meth:`sample_coords` and the detection metrics that
    :meth:`evaluate` adds (:meth:`x_metrics`). Clients build the task without it.
    """

    in_shape: tuple[int, int, int]
    num_classes: int
    mu: float = 1e-3
    hidden: int = 256
    """Number of random features (the prunable width). The largest eigenvalue of H_yy grows with it
    (the layer-normed features have squared norm = width), so a wider layer needs a smaller
    ``inner-lr``; the width sweep behind 256 is in docs/results.md, "Hyper-cleaning: cleaning vs
    training on the noisy labels"."""
    spec: DataSpec | None = None

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return (
            LayerSpec("fc1", "x", self.hidden, prunable=True),  # fixed: never trained (detached)
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

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        return RandomFeatureClassifier(self.in_shape, widths, self.num_classes)

    def init_params(self, widths: Mapping[str, int], num_samples: int) -> tuple[Params, Params]:
        x, y = split_params(self.build_model(widths), self.layers)
        return {LOGIT: torch.zeros(num_samples), **x}, y

    def sample_coords(self, partition_id: int, num_partitions: int) -> dict[str, np.ndarray]:
        spec = replace(self._spec("sample_coords"), num_partitions=num_partitions)
        return {LOGIT: train_coordinates(spec, partition_id)}

    # The feature split (bilevel.split): phi reads x's fc1 detached; the head is y.
    def features(self, model: nn.Module, x: Params, batch: Batch) -> Tensor:
        """phi(batch): the random features (no gradient reaches fc1: it is never trained)."""
        fixed = {k: t.detach() for k, t in self._layer_params(x).items()}
        return functional_call(model, fixed, (batch.inputs,), {"features_only": True}, strict=False)

    def inner_head_loss(self, model: nn.Module, x: Params, y: Params, features: Tensor,
                        batch: Batch) -> Tensor:
        """g given the features: sample-weighted CE of the linear head + mu ||y||^2."""
        if batch.ids is None:
            raise ValueError("hyper-cleaning's inner loss needs Batch.ids (the positions of the "
                             "samples in the client's train split; MinibatchSampler sets them)")
        losses = cross_entropy(self.head_logits(y, features), batch, reduction="none")
        weights = torch.sigmoid(x[LOGIT][batch.ids])
        return torch.mean(weights * losses) + self.ridge(y)

    def x_metrics(self, x: Params) -> dict[str, float]:
        """Detection metrics of the global ``x`` (one logit per global training sample) against
        the true corrupted mask; :meth:`evaluate` adds them to the test accuracy and loss."""
        corrupted = corrupted_mask(self._spec("evaluate"))
        if x[LOGIT].numel() != len(corrupted):
            raise ValueError(f"evaluate needs the global x: {LOGIT} has {x[LOGIT].numel()} entries, "
                             f"the global training set {len(corrupted)}")
        return detection_metrics(x[LOGIT].reshape(-1), corrupted)
