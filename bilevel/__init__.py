"""Framework-free bilevel optimisation: hypergradient product oracles and the local solver.

Nothing here knows about Flower or about pruning: it works on dicts of dense tensors.
"""

from .oracles import ORACLES, ProductOracle, make_oracle
from .solver import BilevelProblem, LocalResult, SolverConfig, rabo_local, rafbo_local

__all__ = [
    "ORACLES", "BilevelProblem", "LocalResult", "ProductOracle",
    "SolverConfig", "make_oracle", "rabo_local", "rafbo_local",
]
