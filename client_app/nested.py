"""Ordered dropout (FjORD) in the bilevel round, with self-distillation from the client's own width.

With ``mask-policy='ordered-dropout'`` the server sends every client the leading units of its
ratio r (nested, as ``static``), and each local outer step trains a *nested* width inside it: the
leading units of a ratio p drawn uniformly from the run's ``ratio-levels`` that fit in r (r
itself included), seeded by (seed, round, client, step). The step's losses run the network at p on
the leading slices of the client's tensors (``torch.index_select``, so gradients land on those
coordinates and every other one is left as it is): a client at r trains every deployed width up
to r as a network of its own, at the cost of the width it drew.

``distill-weight`` lambda > 0 adds lambda * KL(softmax(teacher) || softmax(student)) to both g
and f of a step at p < r (FjORD's in-place distillation; DepthFL and ScaleFL use the same idea):
the student is the width-p head's logits, the teacher the client's full width r at the step's
starting (x, y), computed once per minibatch and held fixed through the step, so g stays strongly
convex in y and the finite-difference products see one function.

The reply covers the client's whole width r: a RAFBO reply holds the unchanged values of the units
its steps did not draw, a RABO reply zero hypergradient on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bilevel import BilevelProblem
from bilevel.estimators import Estimator, Sampler, SolverConfig
from bilevel.split import SplitLoss
from rabo_pruning import SubmodelSpec, submodel_spec
from tasks import BilevelTask, Params, bilevel_problem

__all__ = ["OrderedDropout", "distillation", "nested_index"]

Dims = tuple[Tensor | None, ...]


def full_shapes(task: BilevelTask) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of the full network."""
    return {k: tuple(t.shape) for k, t in task.build_model(task.full_widths()).named_parameters()}


def nested_index(task: BilevelTask, widths: Mapping[str, int], ratio: float,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Dims] | None:
    """Per parameter of the submodel at ``widths`` (the leading units of each group), the index of
    the leading units of ``ratio`` within it, dim by dim (None: the whole dim); None when ``ratio``
    keeps more units of some group than ``widths`` holds. ``shapes``: :func:`full_shapes` (built
    here when not given)."""
    structure = task.structure
    inner = submodel_spec(structure, ratio)
    if any(len(inner.kept.get(g, ())) > widths[g] for g in widths if g in inner.kept):
        return None
    outer = SubmodelSpec(kept={g: np.arange(w) for g, w in widths.items()})
    shapes = shapes if shapes is not None else full_shapes(task)
    outer_index, inner_index = outer.indices(structure, shapes), inner.indices(structure, shapes)
    index: dict[str, Dims] = {}
    for name, big in outer_index.items():
        small = inner_index[name].dims
        local: list[Tensor | None] = []
        for axis, kept in enumerate(small):
            held = big.dims[axis] if axis < len(big.dims) else None
            if kept is None or held is None:
                local.append(None if kept is None else torch.as_tensor(kept))
                continue
            position = np.searchsorted(held, kept)
            if not np.array_equal(held[np.minimum(position, len(held) - 1)], kept):
                raise ValueError(f"{name}: the units of ratio {ratio} are not nested in the client's")
            local.append(torch.as_tensor(position))
        index[name] = tuple(local)
    return index


def _take(params: Params, index: Mapping[str, Dims]) -> Params:
    out = {}
    for name, tensor in params.items():
        for axis, kept in enumerate(index.get(name, ())):
            if kept is not None:
                tensor = tensor.index_select(axis, kept.to(tensor.device))
        out[name] = tensor
    return out


def distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(softmax(teacher) || softmax(student)), averaged over the samples."""
    return F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), reduction="batchmean",
                    log_target=True)


@dataclass
class OrderedDropout:
    """An :class:`~bilevel.estimators.Estimator` that runs ``estimator`` at a nested width per step.

    Args:
        estimator: the run's estimator.
        task, model, widths: the task, and the client's network at its ``widths``.
        levels: the ratios a step may draw (those that fit in ``widths`` are kept).
        seed: seeds the draws, with the step (the run's seed, the round, the client).
        distill_weight: lambda of the distillation term (0: none).
        own_share: the probability of a step at the client's own width; None: uniform (FjORD).
    """

    estimator: Estimator
    task: BilevelTask
    model: nn.Module
    widths: Mapping[str, int]
    levels: Sequence[float]
    seed: Sequence[int]
    distill_weight: float = 0.0
    own_share: float | None = None
    _nested: dict[float, tuple[dict[str, Dims], BilevelProblem]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        device = next(self.model.parameters()).device
        shapes = full_shapes(self.task)  # once per round, not once per level
        for ratio in sorted(set(self.levels)):
            widths = submodel_spec(self.task.structure, ratio).widths(self.task.structure)
            if widths == dict(self.widths):  # the client's own width: draw() gives None
                continue
            index = nested_index(self.task, self.widths, ratio, shapes)
            if index is not None:
                model = self.task.build_model(widths).to(device)
                self._nested[ratio] = (index, bilevel_problem(self.task, model))

    def own_steps(self, solver: SolverConfig) -> int:
        return self.estimator.own_steps(solver)

    def draw(self, step: int) -> float | None:
        """The ratio step ``step`` trains at (None: the client's own width)."""
        rng = np.random.default_rng([*self.seed, step, 13])
        if self.own_share is None:
            choices = [*sorted(self._nested), None]
            return choices[int(rng.integers(len(choices)))]
        if not self._nested or rng.random() < self.own_share:
            return None
        return sorted(self._nested)[int(rng.integers(len(self._nested)))]

    def __call__(self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
                 next_train: Sampler, next_val: Sampler, *, step: int) -> Any:
        ratio = self.draw(step)
        if ratio is None:
            return self.estimator(problem, cfg, x, y, v, next_train, next_val, step=step)
        index, nested = self._nested[ratio]
        teacher = self._teacher(x, y) if self.distill_weight > 0 else None
        sub = BilevelProblem(g=self._sliced(nested.g, index, teacher),
                             f=self._sliced(nested.f, index, teacher))
        return self.estimator(sub, cfg, x, y, v, next_train, next_val, step=step)

    def _teacher(self, x: Params, y: Params) -> Callable[[Any], Tensor]:
        """The client's width's logits at the step's starting (x, y), once per minibatch. The cache
        holds each minibatch with its logits: an id alone is reused once its object is freed."""
        params = {k: t.detach() for k, t in {**x, **y}.items()}
        cache: dict[int, tuple[Any, Tensor]] = {}

        def logits(batch: Any) -> Tensor:
            held = cache.get(id(batch))
            if held is None or held[0] is not batch:
                with torch.no_grad():
                    held = cache[id(batch)] = (batch, functional_call(self.model, params, (batch.inputs,),
                                                                      strict=False))
            return held[1]

        return logits

    def _sliced(self, loss: Any, index: Mapping[str, Dims], teacher: Callable[[Any], Tensor] | None) -> Any:
        """``loss`` of the nested network, as a function of the client's (x, y)."""
        head_logits = getattr(self.task, "head_logits", None)
        if teacher is not None and not (isinstance(loss, SplitLoss) and head_logits is not None):
            raise ValueError("distill-weight needs a task whose y is a linear head on features "
                             "(tasks.FeatureSplit with head_logits)")
        if not isinstance(loss, SplitLoss):
            return lambda x, y, b: loss(_take(x, index), _take(y, index), b)
        weight = self.distill_weight

        def head(x: Params, y: Params, z: Tensor, batch: Any) -> Tensor:
            value = loss.head(_take(x, index), _take(y, index), z, batch)
            if teacher is not None:
                value = value + weight * distillation(head_logits(_take(y, index), z), teacher(batch))
            return value

        return SplitLoss(lambda x, b: loss.features(_take(x, index), b), head)
