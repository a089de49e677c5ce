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

from ..oracles import make_oracle
from .aid import AIDEstimator
from .base import BilevelProblem, Estimator, EstimatorConfig, Sampler, SolverConfig
from .f2sa import F2SAEstimator
from .inner_only import InnerOnlyEstimator
from .neumann import NeumannEstimator

ESTIMATORS = ("finite-difference", "autograd", "neumann", "f2sa", "none")


def make_estimator(config: EstimatorConfig) -> Estimator:
    """The estimator ``config.name`` with its knobs from ``config``; ValueError for an unknown name."""
    name = config.name
    if name in ("finite-difference", "autograd"):
        return AIDEstimator(make_oracle(name, config.fd_alpha, config.fd_scheme),  # type: ignore[arg-type]
                            solver=config.v_solver, batch=config.v_batch)  # type: ignore[arg-type]
    if name == "neumann":
        return NeumannEstimator(steps=config.neumann_steps)
    if name == "f2sa":
        return F2SAEstimator(lambda0=config.f2sa_lambda, growth=config.f2sa_lambda_growth,
                             lambda_max=config.f2sa_lambda_max)
    if name == "none":
        return InnerOnlyEstimator()
    raise ValueError(f"unknown estimator '{name}'; allowed: {', '.join(ESTIMATORS)}")


__all__ = [
    "ESTIMATORS", "AIDEstimator", "BilevelProblem", "Estimator", "EstimatorConfig", "F2SAEstimator",
    "InnerOnlyEstimator", "NeumannEstimator", "Sampler", "SolverConfig", "make_estimator",
]
