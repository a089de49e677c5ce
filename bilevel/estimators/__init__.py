"""Outer-iteration estimators, selected by name: one small module per method.

==================  ============================================================================
finite-difference   AID, warm-started linear solve (gd or cg), products by differences of gradients (aid.py)
autograd            AID, warm-started linear solve (gd or cg), exact products by double backward (aid.py)
neumann             FedNest-style AID: cold-started truncated Neumann series, exact HVPs (neumann.py)
f2sa                F2SA: fully first-order penalty method, lambda schedule (f2sa.py)
none                inner steps only, h = 0: the no-outer-learning baseline (inner_only.py)
==================  ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .aid import AIDEstimator, AIDKnobs
from .base import BilevelProblem, Estimator, Knobs, Sampler, SolverConfig
from .f2sa import F2SAEstimator, F2SAKnobs
from .inner_only import InnerOnlyEstimator
from .neumann import NeumannEstimator, NeumannKnobs


@dataclass(frozen=True)
class Entry:
    knobs: type[Knobs]
    build: Callable[[Any], Estimator]


REGISTRY: dict[str, Entry] = {
    "finite-difference": Entry(AIDKnobs, lambda k: AIDEstimator.from_knobs("finite-difference", k)),
    "autograd": Entry(AIDKnobs, lambda k: AIDEstimator.from_knobs("autograd", k)),
    "neumann": Entry(NeumannKnobs, NeumannEstimator.from_knobs),
    "f2sa": Entry(F2SAKnobs, F2SAEstimator.from_knobs),
    "none": Entry(Knobs, lambda _: InnerOnlyEstimator()),
}
ESTIMATORS = tuple(REGISTRY)


class EstimatorKnobs(AIDKnobs, NeumannKnobs, F2SAKnobs):
    """Every estimator's knobs in one model (the run config inherits its fields and checks)."""


def make_estimator(name: str, knobs: object = None, **values: object) -> Estimator:
    """The estimator ``name``, its knobs read from the attributes of ``knobs`` (e.g. a run config)
    that it declares, then from ``values``; ValueError for an unknown name or an invalid knob."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown estimator '{name}'; allowed: {', '.join(ESTIMATORS)}")
    fields = {f: getattr(knobs, f) for f in entry.knobs.model_fields if hasattr(knobs, f)}
    try:
        return entry.build(entry.knobs.model_validate({**fields, **values}))
    except ValidationError as err:
        problems = "; ".join(
            f"'{'.'.join(map(str, e['loc'])).replace('_', '-')}' = {e['input']!r}: {e['msg']}" if e["loc"]
            else e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ValueError(f"invalid knobs of estimator '{name}': {problems}") from None


__all__ = [
    "ESTIMATORS", "REGISTRY", "AIDEstimator", "BilevelProblem", "Estimator", "EstimatorKnobs",
    "F2SAEstimator", "InnerOnlyEstimator", "Knobs", "NeumannEstimator", "Sampler", "SolverConfig",
    "make_estimator",
]
