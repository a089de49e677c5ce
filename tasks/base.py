"""The interface every bilevel task implements.

A task gives its network's :class:`~tasks.structure.Structure` (the unit groups a submodel keeps or
drops: a layer chain described by :class:`LayerSpec`, or derived from any ``nn.Module`` by
:mod:`tasks.graph`), builds that network at any widths, and defines the inner loss g and the outer
loss f. Everything the server needs for dual pruning is read from the structure; no code anywhere
branches on a model's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bilevel import BilevelProblem
from bilevel.split import SplitLoss

Role = Literal["x", "y"]
Params = dict[str, Tensor]


@dataclass(frozen=True)
class LayerSpec:
    """One layer with parameters ``{name}.weight`` (out, in, ...) and optional ``{name}.bias``.

    Attributes:
        name: attribute name of the layer in the model built by the task.
        role: ``"x"`` (outer / upper-level) or ``"y"`` (inner / lower-level) parameters.
        width: number of output units (channels or neurons) of the full model.
        prunable: whether a submodel may keep only some output units (the final classifier
            is never prunable: it keeps all classes).
        in_expand: number of consecutive inputs of this layer fed by one output unit of the
            previous layer (e.g. H*W after flattening a conv feature map; 1 otherwise).
        has_bias: whether the layer has a bias vector.
    """

    name: str
    role: Role
    width: int
    prunable: bool
    in_expand: int = 1
    has_bias: bool = True


@dataclass(frozen=True)
class Batch:
    """A minibatch: inputs and integer labels (optionally sample ids, for per-sample tasks).

    ``ids`` are the positions of the samples within the client's train split (0..n_train-1), set
    by the minibatch sampler; tasks with per-sample parameters index their x with them.
    """

    inputs: Tensor
    labels: Tensor
    ids: Tensor | None = None
    logit_offset: Tensor | None = None
    """Optional float (num_classes,): the client's label prior in its losses, added to the logits
    by :func:`cross_entropy` (``tasks.class_prior``: masked, restricted or adjusted softmax)."""

    def to(self, device: torch.device) -> Batch:
        ids = None if self.ids is None else self.ids.to(device)
        offset = None if self.logit_offset is None else self.logit_offset.to(device)
        return Batch(self.inputs.to(device), self.labels.to(device), ids, offset)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class ClientData:
    """A client's local data: ``train`` feeds the inner loss g, ``val`` the outer loss f."""

    train: Batch
    val: Batch


class BilevelTask(Protocol):
    """What the client, the server and the tests need from a task."""

    in_shape: tuple[int, int, int]
    """(channels, height, width) of one input."""
    num_classes: int

    @property
    def structure(self) -> Any:
        """The network's :class:`~tasks.structure.Structure` (its prunable unit groups)."""
        ...

    @property
    def sample_params(self) -> tuple[str, ...]:
        """Names of the x parameters with one entry per training sample ("per-sample" params).

        They are not layers of the model: the server sizes them with :attr:`num_samples` and
        each client holds the entries of its own training samples (:meth:`sample_coords`).
        """
        ...

    @property
    def num_samples(self) -> int:
        """Global number of per-sample coordinates (0 without per-sample params)."""
        ...

    def full_widths(self) -> dict[str, int]:
        """Widths of the full (unpruned) model, by unit group (or layer)."""
        ...

    def init_params(self, widths: Mapping[str, int], num_samples: int) -> tuple[Params, Params]:
        """Initial (x, y) of a dense model at ``widths``; per-sample params get ``num_samples``
        entries. Deterministic under ``torch.manual_seed``."""
        ...

    def sample_coords(self, partition_id: int, num_partitions: int) -> dict[str, np.ndarray]:
        """For each per-sample param, the global coordinates of that partition's training
        samples, in the order of its ``ClientData.train`` (ascending)."""
        ...

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        """A dense network whose group (or layer) ``name`` has ``widths[name]`` units."""
        ...

    def inner_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        """g(x, y; batch): strongly convex in y."""
        ...

    def outer_loss(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> Tensor:
        """f(x, y; batch)."""
        ...

    def accuracy(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> float:
        """Fraction of correctly classified samples of ``batch``."""
        ...

    def evaluate(self, model: nn.Module, x: Params, y: Params, batch: Batch) -> dict[str, float]:
        """Metrics of the global (x, y) on the test ``batch``: at least "test-accuracy" and
        "test-loss" (cross-entropy)."""
        ...


@runtime_checkable
class FeatureSplit(Protocol):
    """Optional: a task whose x is the network up to some features and y the rest declares it, and
    every y-only computation reuses the features of a minibatch (bilevel.split). Contract:
    ``inner_loss(m, x, y, b) == inner_head_loss(m, x, y, features(m, x, b), b)`` and likewise for
    the outer loss; the features do not depend on y."""

    def features(self, model: nn.Module, x: Params, batch: Batch) -> Tensor: ...

    def inner_head_loss(self, model: nn.Module, x: Params, y: Params, features: Tensor,
                        batch: Batch) -> Tensor: ...

    def outer_head_loss(self, model: nn.Module, x: Params, y: Params, features: Tensor,
                        batch: Batch) -> Tensor: ...


def bilevel_problem(task: BilevelTask, model: nn.Module) -> BilevelProblem:
    """The task's (g, f) on ``model``, with the feature split when the task declares one."""
    if isinstance(task, FeatureSplit):
        split = task

        def features(x: Params, batch: Batch) -> Tensor:
            return split.features(model, x, batch)

        return BilevelProblem(
            g=SplitLoss(features, lambda x, y, z, b: split.inner_head_loss(model, x, y, z, b)),
            f=SplitLoss(features, lambda x, y, z, b: split.outer_head_loss(model, x, y, z, b)),
        )
    return BilevelProblem(g=lambda x, y, b: task.inner_loss(model, x, y, b),
                          f=lambda x, y, b: task.outer_loss(model, x, y, b))


def cross_entropy(logits: Tensor, batch: Batch, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` against ``batch.labels``; with ``batch.logit_offset`` b, the
    cross-entropy of ``logits + b``: the client's label prior (``tasks.class_prior``; b = -1e9 on a
    class removes it from the softmax, the masked cross-entropy of HeteroFL / FedRolex)."""
    if batch.logit_offset is not None:
        logits = logits + batch.logit_offset.to(logits.dtype)
    return F.cross_entropy(logits, batch.labels, reduction=reduction)


class OutputScaler:
    """HeteroFL's scaler: a pruned layer's output divided by its keep rate during local training.

    A layer that keeps ``k`` of ``W`` output units feeds a next layer whose pre-activations sum
    ``k`` instead of ``W`` terms, about ``k / W`` of the full model's scale; multiplying the
    outputs by ``W / k`` restores it, so a submodel's logits have the full model's scale. Applied
    as forward hooks on the module that owns each prunable group's units (a layer chain's layer, a
    graph group's root), removed by :meth:`remove`; the full model (``k = W``) is unchanged, so
    evaluation needs nothing. A normalization layer after the group undoes it.
    """

    def __init__(self, model: nn.Module, network: Any, widths: Mapping[str, int]) -> None:
        """``network``: the task's structure (or a layer list); ``widths``: the submodel's."""
        self._handles = []
        groups = network.groups if hasattr(network, "groups") else [la for la in network if la.prunable]
        for group in groups:
            kept = widths.get(group.name, group.width)
            if kept < group.width:
                scale = group.width / kept
                module = model.get_submodule(group.name)
                self._handles.append(module.register_forward_hook(
                    lambda _module, _inputs, output, scale=scale: output * scale))

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def split_params(model: nn.Module, layers: tuple[LayerSpec, ...]) -> tuple[Params, Params]:
    """Detached copies of the model's parameters, split into (x, y) by layer role."""
    role = {layer.name: layer.role for layer in layers}
    x: Params = {}
    y: Params = {}
    for name, param in model.named_parameters():
        target = x if role[name.split(".", 1)[0]] == "x" else y
        target[name] = param.detach().clone()
    return x, y

