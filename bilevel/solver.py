"""The local bilevel loop shared by RABO and RAFBO, around one outer-iteration ``Estimator``.

RABO runs one estimator call at the received x and returns (y, v, h); the server averages h and steps x.
RAFBO runs cfg.outer_steps calls with a local step x <- x - outer_lr * h after each and returns (x, y, v)
(with FedProx's ``proximal_mu``, h + proximal_mu * (x - x_0), x_0 the received x); with
``outer_trust_region`` rho > 0 each local step is shortened to at most rho ||x_0|| (a trust region).
The estimator (bilevel.estimators) decides how y, v and h are computed; with ``step_guard``, each
outer step first caps the inner and v step sizes by the measured curvature (bilevel.step_guard).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .estimators import BilevelProblem, Estimator, Sampler, SolverConfig
from .estimators.base import axpy
from .oracles.finite_difference import norm_of
from .step_guard import guarded
from .types import Params

__all__ = ["BilevelProblem", "LocalResult", "Sampler", "SolverConfig", "rabo_local", "rafbo_local"]


@dataclass
class LocalResult:
    x: Params
    y: Params
    v: Params
    h: Params | None = None
    """The last direction h (what RABO sends)."""
    metrics: dict[str, float] = field(default_factory=dict)


def rabo_local(
    problem: BilevelProblem, estimator: Estimator, cfg: SolverConfig,
    x: Params, y: Params, v: Params, next_train: Sampler, next_val: Sampler, *, first_step: int = 0,
) -> LocalResult:
    """RABO (distributed): one direction h at the received x, as outer step ``first_step``."""
    step_cfg, guard = guarded(cfg, problem, x, y, next_train)
    y, v, h, metrics = estimator(problem, step_cfg, x, y, v, next_train, next_val, step=first_step)
    return LocalResult(x=x, y=y, v=v, h=h, metrics={**metrics, **guard})


def rafbo_local(
    problem: BilevelProblem, estimator: Estimator, cfg: SolverConfig,
    x: Params, y: Params, v: Params, next_train: Sampler, next_val: Sampler, *, first_step: int = 0,
) -> LocalResult:
    """RAFBO (federated): cfg.outer_steps local outer steps on x, as outer steps first_step + t.

    The trust region (``cfg.outer_trust_region`` rho > 0) is the x-step's counterpart of the step
    guard on y and v: a step outer_lr * h longer than rho ||x_0|| is scaled to that length (x_0 the
    received x; no bound when x_0 = 0). Under label skew a client's hypergradient can jump by 10x
    within its local steps as its logits saturate, where a curvature estimate reads near 0 and would
    not help; the metric ``outer-steps-clipped`` is the fraction of steps shortened.
    """
    h: Params | None = None
    metrics: dict[str, float] = {}
    start = x
    radius = cfg.outer_trust_region * norm_of(start)
    clipped = 0
    for t in range(cfg.outer_steps):
        step_cfg, guard = guarded(cfg, problem, x, y, next_train)
        y, v, h, metrics = estimator(problem, step_cfg, x, y, v, next_train, next_val, step=first_step + t)
        metrics = {**metrics, **guard}
        step = h if cfg.proximal_mu == 0.0 else {k: h[k] + cfg.proximal_mu * (x[k] - start[k]) for k in h}
        lr = cfg.outer_lr
        if radius > 0.0 and (length := lr * norm_of(step)) > radius:
            lr, clipped = lr * radius / length, clipped + 1
        x = axpy(-lr, step, x)
    if cfg.outer_trust_region > 0.0:
        metrics["outer-steps-clipped"] = clipped / max(cfg.outer_steps, 1)
    return LocalResult(x=x, y=y, v=v, h=h, metrics=metrics)
