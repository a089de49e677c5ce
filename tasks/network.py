"""Hyper-representation on any network: x = a backbone (any ``nn.Module`` from images to features),
y = a linear head on its features.

    g(x, y) = CE(head_y(phi_x(train inputs)), train labels) + mu * ||y||^2   (strongly convex in y)
    f(x, y) = CE(head_y(phi_x(val inputs)), val labels)

The unit groups come from the network itself (:mod:`tasks.graph`); a submodel is the full network
pruned by the same library to the widths the server sent, so a client trains an ordinary small
dense network. Batch normalization follows ``norm_stats`` (:data:`NormStats`).

Example: a task around your own backbone (``task='my_package.my_module:task'``)::

    >>> from torch import nn
    >>> def backbone(in_shape):
    ...     return nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    ...                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> task = BackboneTask((1, 28, 28), 10, factory=backbone)
    >>> [(g.name, g.width) for g in task.structure.groups]
    [('backbone.0', 8)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .base import Batch, LayerSpec, Params
from .graph import GraphStructure, derive_structure, prune
from .linear_head import LinearHeadTask

NormStats = Literal["batch", "recalibrate", "local"]
"""Batch normalization under partial training (any other normalization has no statistics).
Local training always normalises with batch statistics; running statistics are never averaged
(a unit's statistics depend on which inputs a submodel kept, so averaging them across widths
mixes different quantities). The choices differ in where an evaluated model's statistics come from:

- ``batch`` (HeteroFL's static BN): from the evaluated batch itself; no running statistics exist.
- ``recalibrate``: from the server's held-out inputs (labels unused), computed for the model being
  evaluated just before: the global model on the server, and the submodel a node evaluates
  (sent with it, see ``node-eval-every``).
- ``local`` (FedBN's statistics kept on the client): from the node's own train inputs, computed on
  the node for the model it evaluates; they never leave it. The server holds none and evaluates
  the global model with batch statistics.
"""
HEAD = "head"


class FeatureHead(nn.Module):
    """``backbone`` (images -> features), a parameter-free layer norm, then a linear ``head``.

    The normalization gives the head features of unit scale at every width and depth (a
    ResNet-20's pooled features reach a norm of 75 after two rounds), so one inner learning rate
    suits every ratio and network, and the finite-difference products stay accurate at the default
    ``fd-alpha`` (their error grows with the curvature of g in y, which grows with the features).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, inputs: Tensor, *, features_only: bool = False) -> Tensor:
        features = self.backbone(inputs)
        features = F.layer_norm(features, features.shape[1:])
        return features if features_only else self.head(features)


def _batch_norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


@torch.no_grad()
def running_statistics(model: nn.Module, params: Params, inputs: Tensor) -> Params:
    """The running statistics (``<bn>.running_mean``, ``<bn>.running_var``) of every BatchNorm of
    ``model`` (any width) with ``params``: the average over ``inputs`` (in chunks of 256) of each
    chunk's batch statistics. Empty for a network without BatchNorm."""
    calibrated = copy.deepcopy(model).eval()
    norms = _batch_norms(calibrated)
    if not norms:
        return {}
    for module in norms.values():  # running statistics, accumulated as a cumulative average
        module.track_running_stats, module.momentum = True, None
        module.register_buffer("running_mean", torch.zeros(module.num_features, device=inputs.device))
        module.register_buffer("running_var", torch.ones(module.num_features, device=inputs.device))
        module.register_buffer("num_batches_tracked", torch.tensor(0, device=inputs.device))
        module.train()  # only the norms: dropout stays off
    for chunk in inputs.split(256):
        functional_call(calibrated, params, (chunk,), strict=False)
    return {f"{name}.{stat}": getattr(module, stat).detach().clone()
            for name, module in norms.items() for stat in ("running_mean", "running_var")}


def with_statistics(model: nn.Module, statistics: Params) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorms normalise with ``statistics`` (as from
    :func:`running_statistics` on the same widths); ValueError naming a missing or misshaped one."""
    out = copy.deepcopy(model).eval()
    for name, module in _batch_norms(out).items():
        for stat in ("running_mean", "running_var"):
            value = statistics.get(f"{name}.{stat}")
            if value is None or tuple(value.shape) != (module.num_features,):
                raise ValueError(f"statistics '{name}.{stat}' missing or not of shape "
                                 f"({module.num_features},)")
            module.register_buffer(stat, torch.as_tensor(value, dtype=torch.float32).to(
                next(out.parameters()).device))
        module.track_running_stats = True
        module.register_buffer("num_batches_tracked", torch.tensor(0))
    return out


def _batch_statistics(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm on batch statistics (no running statistics)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return model


@dataclass(frozen=True)
class NetworkTask(LinearHeadTask):
    """The task on ``backbone(in_shape)``; subclasses define :meth:`backbone`."""

    in_shape: tuple[int, int, int]
    num_classes: int
    mu: float = 1e-3
    norm_stats: NormStats = "batch"

    def backbone(self) -> nn.Module:
        """The x network: images (N, *in_shape) -> features (N, D)."""
        raise NotImplementedError

    def example(self) -> Tensor:
        return torch.zeros(2, *self.in_shape)

    def full_model(self) -> nn.Module:
        """The full network, seeded by the caller (``torch.manual_seed``)."""
        backbone = self.backbone()
        with torch.no_grad():
            feature_dim = backbone.eval()(self.example()).shape[1]
        return FeatureHead(backbone, feature_dim, self.num_classes)

    @cached_property
    def structure(self) -> GraphStructure:  # type: ignore[override]
        return _structure(self)

    def full_widths(self) -> dict[str, int]:
        return self.structure.full_widths()

    def build_model(self, widths: Mapping[str, int]) -> nn.Module:
        """The full network pruned to the leading ``widths[g]`` units of each group, in eval mode
        (dropout off: the finite-difference products need a deterministic g; BatchNorm still uses
        batch statistics, see :data:`NormStats`)."""
        return _batch_statistics(copy.deepcopy(_pruned(self, tuple(sorted(widths.items()))))).eval()

    def init_params(self, widths: Mapping[str, int], num_samples: int = 0) -> tuple[Params, Params]:
        model = prune(self.full_model(), self.example(), {g: np.arange(w) for g, w in widths.items()})
        params = {k: p.detach().clone() for k, p in model.named_parameters()}
        return ({k: t for k, t in params.items() if not k.startswith(f"{HEAD}.")},
                {k: t for k, t in params.items() if k.startswith(f"{HEAD}.")})

    def statistics(self, model: nn.Module, x: Params, y: Params, inputs: Tensor) -> Params:
        """The BatchNorm running statistics of ``model`` at (x, y) over ``inputs``
        (:func:`running_statistics`)."""
        return running_statistics(model, {**x, **y}, inputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Params, y: Params, batch: Batch,
                 statistics: Params | None = None) -> dict[str, float]:
        """Test metrics on ``batch``, normalised with ``statistics`` when given, else as
        ``norm_stats`` says for the server: ``recalibrate`` computes them on ``batch.inputs``,
        ``batch`` and ``local`` use batch statistics."""
        if statistics is None and self.norm_stats == "recalibrate":
            statistics = self.statistics(model, x, y, batch.inputs)
        if statistics:
            model = with_statistics(model, statistics)
        return super().evaluate(model, x, y, batch)


# Both caches draw a network of their own without touching the caller's random state: whether
# they hit must not change the next draw (a run's initial model, in a process that ran others).
@lru_cache(maxsize=8)
def _structure(task: NetworkTask) -> GraphStructure:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return derive_structure(task.full_model(), task.example(),
                                lambda name: "y" if name.startswith(f"{HEAD}.") else "x",
                                LayerSpec(HEAD, "y", task.num_classes, prunable=False))


@lru_cache(maxsize=16)
def _pruned(task: NetworkTask, widths: tuple[tuple[str, int], ...]) -> nn.Module:
    """The network at ``widths`` (its parameter values are never used: the client loads its own)."""
    with torch.random.fork_rng(devices=[]):
        return prune(task.full_model(), task.example(), {g: np.arange(w) for g, w in widths})


@dataclass(frozen=True)
class BackboneTask(NetworkTask):
    """A :class:`NetworkTask` around your own ``factory(in_shape) -> nn.Module`` (the backbone)."""

    factory: Callable[[tuple[int, int, int]], nn.Module] | None = None

    def backbone(self) -> nn.Module:
        if self.factory is None:
            raise ValueError("BackboneTask needs factory=<a function from in_shape to the backbone>")
        return self.factory(self.in_shape)
