"""Iterative solvers for the AID linear system H_yy v = grad_y f, on products alone.

Both take ``hvp`` (v -> H_yy v, e.g. ``Products.hyy`` bound to one minibatch), the right-hand side b
and a warm start v0, and return the new v. Neither ever forms H_yy.

* ``gd``: ``steps`` steps of gradient descent on 1/2 v^T H v - b^T v, v <- v - lr (H v - b): one product
  per step; converges for 0 < lr < 2/L, at a rate set by lr * lambda_min (slow on ill-conditioned H).
* ``cg``: ``steps`` iterations of conjugate gradient (plus one product for the residual of a nonzero
  warm start): exact in n_y steps in exact arithmetic, and after k steps its error in the H-norm is
  at most 2 ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^k of the start's, against (1 - 1/kappa)^k for gd
  at its best step. It needs the same H in every product, so all products must use one minibatch.
  It stops early when the residual is below ``tol`` ||b||.

  **Breakdown.** CG assumes H positive definite. When a search direction p has curvature
  p^T H p <= 0 (or NaN: H indefinite there, or the products too noisy) it stops, returns the iterate
  reached so far (v0 itself when the first direction breaks down; never NaN) and warns
  :class:`IndefiniteSystemWarning`, attributed to the caller of :func:`solve` (or of :func:`cg`).
  The message is the same every time, so Python's default warning filter shows it once per calling
  line; ``warnings.simplefilter("error", IndefiniteSystemWarning)`` turns it into an exception.

  Each new residual is re-orthogonalised against all earlier ones (stored normalised: ``steps``
  vectors shaped like y; y is a classifier head in every built-in task). Without it, CG on these
  systems is hypersensitive to the products' rounding: H_yy has a large cluster of eigenvalues at
  2 mu, and finite-difference products perturb it enough to lose most of CG's advantage
  (measured in docs/results.md, section 1, "CG needed re-orthogonalisation").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from .types import Params

Solver = Literal["gd", "cg"]
SOLVERS: tuple[Solver, ...] = get_args(Solver)
HVP = Callable[[Params], Params]

__all__ = ["HVP", "SOLVERS", "IndefiniteSystemWarning", "Solver", "cg", "gd", "solve"]


class IndefiniteSystemWarning(RuntimeWarning):
    """:func:`cg` met a search direction of curvature p^T H p <= 0 and stopped there."""


def _dot(a: Params, b: Params) -> float:
    return float(sum(torch.sum(a[k] * b[k]) for k in a))


def _axpy(a: float | Tensor, x: Params, y: Params) -> Params:
    return {k: y[k] + a * x[k] for k in y}


def gd(hvp: HVP, b: Params, v0: Params, *, steps: int, lr: float) -> Params:
    """``steps`` steps v <- v - lr (H v - b) from v0."""
    v = v0
    for _ in range(steps):
        hv = hvp(v)
        v = {k: v[k] - lr * (hv[k] - b[k]) for k in v}
    return v


def cg(hvp: HVP, b: Params, v0: Params, *, steps: int, tol: float = 1e-10,
       stacklevel: int = 2) -> Params:
    """``steps`` conjugate-gradient iterations on H v = b from v0 (see the module docstring).

    Stops at a direction of curvature p^T H p <= 0, keeping the iterate reached so far, and warns
    :class:`IndefiniteSystemWarning`.

    >>> import torch
    >>> h = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> v = cg(lambda p: {"y": h @ p["y"]}, {"y": torch.ones(2)}, {"y": torch.zeros(2)}, steps=2)
    >>> torch.allclose(h @ v["y"], torch.ones(2))
    True
    """
    warm = any(bool(torch.any(t != 0)) for t in v0.values())
    r = _axpy(-1.0, hvp(v0), b) if warm else dict(b)
    v, p = v0, dict(r)
    rr = _dot(r, r)
    threshold = tol * tol * _dot(b, b)
    basis: list[Params] = []
    for _ in range(steps):
        if rr <= threshold or rr == 0.0:
            break
        basis.append({k: t / math.sqrt(rr) for k, t in r.items()})
        hp = hvp(p)
        curvature = _dot(p, hp)
        if not curvature > 0.0:  # also catches NaN
            warnings.warn("conjugate gradient stopped at a direction of curvature p^T H p <= 0 (H_yy "
                          "not positive definite there, or the products too noisy); v is the iterate "
                          "reached so far", IndefiniteSystemWarning, stacklevel=stacklevel)
            break
        step = rr / curvature
        v, r = _axpy(step, p, v), _axpy(-step, hp, r)
        for q in basis:  # full re-orthogonalisation (see the module docstring)
            r = _axpy(-_dot(q, r), q, r)
        rr_new = _dot(r, r)
        p = _axpy(rr_new / rr, p, r)
        rr = rr_new
    return v


def solve(solver: Solver, hvp: HVP, b: Params, v0: Params, *, steps: int, lr: float) -> Params:
    """The linear solve named ``solver`` (one of :data:`SOLVERS`; ``lr`` is gd's step, cg picks
    its own)."""
    if solver == "gd":
        return gd(hvp, b, v0, steps=steps, lr=lr)
    if solver == "cg":
        return cg(hvp, b, v0, steps=steps, stacklevel=3)
    raise ValueError(f"unknown v-solver '{solver}'; allowed: {', '.join(SOLVERS)}")
