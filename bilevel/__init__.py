"""Framework-free bilevel optimisation: outer-iteration estimators, product oracles and the local solver.

Nothing here knows about Flower or about pruning: it works on dicts of dense tensors.
"""

from .estimators import ESTIMATORS, Estimator, EstimatorKnobs, make_estimator
from .oracles import ORACLES, ProductOracle, make_oracle
from .solver import BilevelProblem, LocalResult, Sampler, SolverConfig, rabo_local, rafbo_local

__all__ = [
    "ESTIMATORS", "ORACLES", "BilevelProblem", "Estimator", "EstimatorKnobs", "LocalResult",
    "ProductOracle", "Sampler", "SolverConfig", "make_estimator", "make_oracle", "rabo_local", "rafbo_local",
]
