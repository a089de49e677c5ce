"""Hyper-representation with two hidden layers ("hyper-representation-mlp2").

x = two dense-relu layers (784-256-128 on MNIST), y = the linear classifier head on the second
one's output; the losses are the CNN task's (:class:`~tasks.hyper_representation.HyperRepresentation`):

    g(x, y) = CE(head_y(phi_x(train inputs)), train labels) + mu * ||y||^2
    f(x, y) = CE(head_y(phi_x(val inputs)), val labels)

Both hidden layers are prunable: a submodel keeps ceil(ratio * width) units of each, and the
second layer keeps the inputs its kept units read from the first (a layer chain, ``tasks.structure``).

Example (the run config takes the task and its default mask policy; a half-width submodel):
    >>> from rabo_protocol import parse_run_config
    >>> from rabo_pruning import make_mask_policy, submodel_spec
    >>> from tasks import DataSpec, holdout_set, make_task
    >>> cfg = parse_run_config({"task": "hyper-representation-mlp2"})
    >>> cfg.mask_policy, cfg.sources["mask-policy"]
    ('static', 'task default')
    >>> spec = DataSpec(dataset="sklearn-digits", num_partitions=1)
    >>> task = make_task("hyper-representation-mlp2", spec, mu=1e-3)
    >>> x, y = task.init_params(task.full_widths())
    >>> {name: tuple(t.shape) for name, t in x.items()}
    {'fc1.weight': (256, 64), 'fc1.bias': (256,), 'fc2.weight': (128, 256), 'fc2.bias': (128,)}
    >>> sorted(y)
    ['head.bias', 'head.weight']
    >>> kept = submodel_spec(task.layers, 0.5, make_mask_policy("rolling", 0), server_round=3).kept
    >>> widths = {name: len(units) for name, units in kept.items()}
    >>> widths
    {'fc1': 128, 'fc2': 64}
    >>> task.build_model({**widths, "head": 10})(holdout_set(spec).inputs[:5]).shape
    torch.Size([5, 10])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerSpec
from .hyper_representation import HyperRepresentation


class TwoHiddenLayerMLP(nn.Module):
    """flatten, dense-relu, dense-relu (the features), linear head."""

    def __init__(self, in_features: int, widths: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, widths["fc1"])
        self.fc2 = nn.Linear(widths["fc1"], widths["fc2"])
        self.head = nn.Linear(widths["fc2"], num_classes)

    def forward(self, inputs: Tensor, *, features_only: bool = False) -> Tensor:
        features = F.relu(self.fc2(F.relu(self.fc1(inputs.flatten(1)))))
        return features if features_only else self.head(features)


@dataclass(frozen=True)
class HyperRepresentationMLP2(HyperRepresentation):
    """The task; ``in_shape`` and ``num_classes`` come from the dataset."""

    hidden1: int = 256
    hidden2: int = 128

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return (LayerSpec("fc1", "x", self.hidden1, prunable=True),
                LayerSpec("fc2", "x", self.hidden2, prunable=True),
                LayerSpec("head", "y", self.num_classes, prunable=False))

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        channels, height, width = self.in_shape
        return TwoHiddenLayerMLP(channels * height * width, widths, self.num_classes)
