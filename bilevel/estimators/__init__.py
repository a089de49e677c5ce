"""Outer-iteration estimators, selected by name: one small module per method.

==================  ============================================================================
finite-difference   AID, warm-started linear solve (gd or cg), products by differences of gradients (aid.py)
autograd            AID, warm-started linear solve (gd or cg), exact products by double backward (aid.py)
neumann             FedNest-style AID: cold-started truncated Neumann series, exact HVPs (neumann.py)
f2sa                F2SA: fully first-order penalty method, lambda schedule (f2sa.py)
none                inner steps only, h = 0: the no-outer-learning baseline (inner_only.py)
==================  ============================================================================

Each module declares its knobs once, as a :class:`Knobs` model (type, range, default, docstring);
the run config inherits them through :class:`EstimatorKnobs`, so a new knob is one field there,
plus its default in pyproject.toml and its row in the key table. A new estimator is its module
and one row of :data:`REGISTRY` (and its knob model among :class:`EstimatorKnobs`' bases).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import ValidationError

from ..oracles import ORACLES
from .aid import AIDEstimator, AIDKnobs
from .base import BilevelProblem, Estimator, Knobs, Sampler, SolverConfig
from .f2sa import F2SAEstimator, F2SAKnobs
from .inner_only import InnerOnlyEstimator
from .neumann import NeumannEstimator, NeumannKnobs


@dataclass(frozen=True)
class Entry:
    knobs: type[Knobs]
    """The estimator's knob model: its run-config keys, their defaults and checks."""
    build: Callable[[Any], Estimator]
    """Builds the estimator from a validated instance of ``knobs``."""


REGISTRY: dict[str, Entry] = {
    # AID with every product oracle (bilevel.oracles.REGISTRY), under the oracle's name
    **{oracle: Entry(AIDKnobs, partial(AIDEstimator.from_knobs, oracle)) for oracle in ORACLES},
    "neumann": Entry(NeumannKnobs, NeumannEstimator.from_knobs),
    "f2sa": Entry(F2SAKnobs, F2SAEstimator.from_knobs),
    "none": Entry(Knobs, lambda _: InnerOnlyEstimator()),
}
ESTIMATORS = tuple(REGISTRY)


class EstimatorKnobs(AIDKnobs, NeumannKnobs, F2SAKnobs):
    """Every estimator's knobs in one model (the run config inherits its fields and checks)."""


def make_estimator(name: str, knobs: object = None, **values: object) -> Estimator:
    """The estimator ``name``, its knobs read from the attributes of ``knobs`` (e.g. a run config)
    that it declares, then from ``values``; ValueError for an unknown name or an invalid knob.

    Knobs are checked once, at the boundary: an instance of the estimator's knob model (a parsed
    run config is one) is used as it is; anything else is validated here.
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown estimator '{name}'; allowed: {', '.join(ESTIMATORS)}")
    if isinstance(knobs, entry.knobs) and not values:
        return entry.build(knobs)
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
