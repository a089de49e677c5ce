"""The measurements of :mod:`benchmarks.oracles`: the accuracy rows (quadratic and CNN), the cost
rows (time, peak memory, FLOPs per call) and the verdicts on the targets; see
:mod:`benchmarks.oracles`. A helper, not a script."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import grad

from benchmarks.common import median_seconds
from benchmarks.oracle_setup import (
    F32,
    F64,
    Case,
    Params,
    Reference,
    Settings,
    cast,
    flat,
    rel,
    unflat,
    zeros,
)
from bilevel import BilevelProblem, SolverConfig, make_estimator
from bilevel.oracles import AutogradProducts, FiniteDifferenceProducts
from bilevel.quadratic import Quadratic
from client_app.profiling import measure

CPU = torch.device("cpu")
METHODS = {"FD-AID": ("finite-difference", "gd"), "FD-AID CG": ("finite-difference", "cg"),
           "autograd-AID": ("autograd", "gd"), "autograd-AID CG": ("autograd", "cg"),
           "Neumann": ("neumann", "gd")}
"""Table name -> (estimator name, v-solver)."""
MB = 2.0 ** 20
FINE_ALPHA = 3e-3
"""A finer fd-alpha for the CG rows: float32 products are still within 1e-3 of exact at it."""


# ---- accuracy ------------------------------------------------------------------------------------------

def hypergradient(method: str, k: int, problem: BilevelProblem, x: Params, y: Params, train: Any, val: Any,
                  v_lr: float, fd_alpha: float, v0: Params | None = None) -> tuple[Params, Params]:
    """(h, v) of estimator ``method`` at (x, y): no inner step, K linear steps / Neumann terms from
    ``v0`` (default 0; Neumann always starts from 0)."""
    name, solver = METHODS[method]
    estimator = make_estimator(name, fd_alpha=fd_alpha, neumann_steps=k, v_solver=solver)
    cfg = SolverConfig(inner_steps=0, v_steps=k, v_lr=v_lr)
    v0 = zeros(y) if v0 is None else v0
    _, v, h, _ = estimator(problem, cfg, x, y, v0, lambda: train, lambda: val, step=0)
    return h, v


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
        estimator = make_estimator(name, fd_alpha=settings.fd_alpha, fd_scheme=scheme,
                                                   v_solver=solver, neumann_steps=k)
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
    """The hypergradient-cost targets, met or missed at each width, with the ratios they rest on."""
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
