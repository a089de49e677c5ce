"""Hyper-representation learning.

x = a small CNN feature extractor (two 5x5 conv blocks and a dense layer), y = the linear
classifier head on its features.

    g(x, y) = CE(head_y(phi_x(train inputs)), train labels) + mu * ||y||^2   (strongly convex in y)
    f(x, y) = CE(head_y(phi_x(val inputs)), val labels)

Both losses are declared with their feature split (``features`` and the ``*_head_loss`` methods):
y-only work reuses phi_x of a minibatch (bilevel.split).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerSpec, Params, split_params
from .linear_head import LinearHeadTask


class ConvNet(nn.Module):
    """conv-relu-pool, conv-relu-pool, flatten, dense-relu-layernorm (the features), linear head."""

    def __init__(self, in_shape: tuple[int, int, int], widths: Mapping[str, int],
                 num_classes: int) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.conv1 = nn.Conv2d(channels, widths["conv1"], 5, padding=2)
        self.conv2 = nn.Conv2d(widths["conv1"], widths["conv2"], 5, padding=2)
        self.fc1 = nn.Linear(widths["conv2"] * (height // 4) * (width // 4), widths["fc1"])
        self.head = nn.Linear(widths["fc1"], num_classes)
        for layer in (self.conv1, self.conv2, self.fc1):  # He init: features of unit scale
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def features(self, inputs: Tensor) -> Tensor:
        out = F.max_pool2d(F.relu(self.conv1(inputs)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        # Parameter-free layer norm: features of the same scale at every width, so a submodel's
        # head sees features like the full model's and one inner learning rate suits all ratios.
        features = F.relu(self.fc1(out.flatten(1)))
        return F.layer_norm(features, features.shape[1:])

    def forward(self, inputs: Tensor, *, features_only: bool = False) -> Tensor:
        features = self.features(inputs)
        return features if features_only else self.head(features)


@dataclass(frozen=True)
class HyperRepresentation(LinearHeadTask):
    """The task; ``in_shape`` and ``num_classes`` come from the dataset."""

    in_shape: tuple[int, int, int]
    num_classes: int
    mu: float = 1e-3
    conv1: int = 16
    conv2: int = 32
    fc1: int = 64

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        _, height, width = self.in_shape
        return (
            LayerSpec("conv1", "x", self.conv1, prunable=True),
            LayerSpec("conv2", "x", self.conv2, prunable=True),
            LayerSpec("fc1", "x", self.fc1, prunable=True, in_expand=(height // 4) * (width // 4)),
            LayerSpec("head", "y", self.num_classes, prunable=False),
        )

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        return ConvNet(self.in_shape, widths, self.num_classes)

    def init_params(self, widths: Mapping[str, int], num_samples: int = 0) -> tuple[Params, Params]:
        return split_params(self.build_model(widths), self.layers)


class SingleHiddenLayerMLP(nn.Module):
    """flatten, dense-relu (the features), linear head: the FedNest hyper-representation network."""

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, inputs: Tensor, *, features_only: bool = False) -> Tensor:
        features = F.relu(self.fc1(inputs.flatten(1)))
        return features if features_only else self.head(features)


@dataclass(frozen=True)
class HyperRepresentationMLP(HyperRepresentation):
    """FedNest's hyper-representation setting (Tarzanagh et al. 2022): a 784-200-10 MLP whose first
    layer is x and whose head is y; the same losses as the CNN task, so results sit beside
    FedNest's published curves. PyTorch's default initialisation, no feature normalisation."""

    hidden: int = 200

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return (LayerSpec("fc1", "x", self.hidden, prunable=True),
                LayerSpec("head", "y", self.num_classes, prunable=False))

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        channels, height, width = self.in_shape
        return SingleHiddenLayerMLP(channels * height * width, widths["fc1"], self.num_classes)
