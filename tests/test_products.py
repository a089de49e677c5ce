"""The cheap hypergradient: feature splits, products bound to one minibatch, fd-scheme, v-solver,
and finite-difference products that match autograd on every task at the state of a real run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bilevel import BilevelProblem, SolverConfig, make_estimator
from bilevel.linear_solve import IndefiniteSystemWarning, cg, gd
from bilevel.oracles import AutogradProducts, FiniteDifferenceProducts
from bilevel.quadratic import Quadratic
from bilevel.split import SplitLoss
from client_app.local import local_round
from rabo_protocol import ConfigError, RunConfig, parse_run_config
from tasks import TASKS, bilevel_problem, client_data, make_task
from tasks.sampling import MinibatchSampler, seeded_generator
from tests.fakes import FAST_CONFIG

F64 = torch.float64
Params = dict[str, torch.Tensor]


def _flat(p: Params) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in p.values()])


def _rel(a: Params, b: Params) -> float:
    return float((_flat(a) - _flat(b)).norm() / _flat(b).norm())


def _real_run_state(task_name: str) -> tuple[object, BilevelProblem, Params, Params, Params, object]:
    """(task, problem, x, y, v, train batch) after two RAFBO rounds of the app's local solver on real
    data (float32, the default fd-alpha): v is what a run carries, not a random vector."""
    extra = {"label-noise": 0.5} if task_name == "hyper-cleaning" else {}
    cfg = parse_run_config({**FAST_CONFIG, "task": task_name, "algorithm": "rafbo", **extra})
    spec = cfg.data_spec(4)
    task = make_task(task_name, spec, cfg.mu)
    data = client_data(spec, 0)
    torch.manual_seed(cfg.seed)
    x, y = task.init_params(task.full_widths(), len(data.train))
    parts = {"x": x, "y": y, "v": {k: torch.zeros_like(t) for k, t in y.items()}}
    for server_round in (1, 2):
        arrays = {p: {k: t.detach().numpy() for k, t in part.items()} for p, part in parts.items()}
        reply, _ = local_round(task, data, cfg, task.full_widths(), arrays, server_round=server_round,
                               partition_id=0)
        parts = reply
    model = task.build_model(task.full_widths())
    batch = MinibatchSampler(data.train, cfg.batch_size, seeded_generator(9), torch.device("cpu"))()
    return task, bilevel_problem(task, model), parts["x"], parts["y"], parts["v"], batch


@pytest.mark.parametrize("task_name", TASKS)
def test_finite_differences_match_autograd_within_1e_3_on_every_task(task_name: str) -> None:
    """float32, default fd-alpha = 1e-2, at (x, y, v) of a real run: within 1e-3 of autograd."""
    _, problem, x, y, v, batch = _real_run_state(task_name)
    assert float(_flat(v).norm()) > 0, "the run must have produced a nonzero v"
    exact = AutogradProducts().at(problem.g, x, y, batch)
    fd = FiniteDifferenceProducts(alpha=RunConfig().fd_alpha).at(problem.g, x, y, batch)
    assert _rel(fd.hyy(v), exact.hyy(v)) < 1e-3
    hxy_exact = exact.hxy(v)
    if float(_flat(hxy_exact).norm()) > 0:
        assert _rel(fd.hxy(v), hxy_exact) < 1e-3


@pytest.mark.parametrize("task_name", TASKS)
def test_the_feature_split_keeps_the_losses_and_the_products(task_name: str) -> None:
    """The split is an optimisation only: same g, f and products as the task's plain losses."""
    task, problem, x, y, v, batch = _real_run_state(task_name)
    assert isinstance(problem.g, SplitLoss) and isinstance(problem.f, SplitLoss)
    model = task.build_model(task.full_widths())  # type: ignore[attr-defined]
    plain_g = lambda x_, y_, b: task.inner_loss(model, x_, y_, b)  # type: ignore[attr-defined] # noqa: E731
    torch.testing.assert_close(problem.g(x, y, batch), plain_g(x, y, batch), rtol=1e-6, atol=0)
    for oracle in (AutogradProducts(), FiniteDifferenceProducts()):
        split, plain = oracle.at(problem.g, x, y, batch), oracle.at(plain_g, x, y, batch)
        assert _rel(split.hyy(v), plain.hyy(v)) < 1e-4
        hxy = plain.hxy(v)
        if float(_flat(hxy).norm()) > 0:
            assert _rel(split.hxy(v), hxy) < 1e-4


def test_forward_differences_are_first_order_and_central_second_order() -> None:
    """Error of H_yy v on the CNN (float64) vs alpha: forward O(alpha), central O(alpha^2)."""
    _, problem, x, y, v, batch = _real_run_state("hyper-representation")
    x, y, v = ({k: t.double() for k, t in p.items()} for p in (x, y, v))
    batch = dataclasses.replace(batch, inputs=batch.inputs.double())
    exact = AutogradProducts().at(problem.g, x, y, batch).hyy(v)
    errors = {}
    for scheme in ("forward", "central"):
        for alpha in (1e-1, 1e-2):
            products = FiniteDifferenceProducts(alpha=alpha, scheme=scheme).at(problem.g, x, y, batch)
            errors[scheme, alpha] = _rel(products.hyy(v), exact)
    assert 5 < errors["forward", 1e-1] / errors["forward", 1e-2] < 20, errors  # ~10x per decade
    assert errors["central", 1e-1] / errors["central", 1e-2] > 50, errors  # ~100x per decade
    assert errors["central", 1e-2] < errors["forward", 1e-2] / 10, errors


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_finite_differences_survive_extreme_directions_in_float32(scale: float) -> None:
    """||v||^2 would overflow (1e40) or underflow (1e-50) in float32: the product stays exact."""
    q = Quadratic.random(seed=3)
    gen = torch.Generator().manual_seed(4)
    a, b = q.A.float(), q.B.float()
    g = lambda x_, y_, _: 0.5 * y_["y"] @ a @ y_["y"] - y_["y"] @ b @ x_["x"]  # noqa: E731
    x = {"x": torch.randn(6, generator=gen)}
    y = {"y": torch.randn(4, generator=gen)}
    v = {"y": torch.randn(4, generator=gen) * scale}
    hyy, hxy = FiniteDifferenceProducts()(g, x, y, v, None)
    assert hxy is not None
    assert bool(torch.isfinite(hyy["y"]).all()) and bool(torch.any(hyy["y"] != 0))
    torch.testing.assert_close(hyy["y"], a @ v["y"], rtol=1e-3, atol=0)
    torch.testing.assert_close(hxy["x"], -b.T @ v["y"], rtol=1e-3, atol=0)


def test_finite_differences_refuse_a_non_finite_direction() -> None:
    q = Quadratic.random()
    with pytest.raises(ValueError, match="NaN or infinite"):
        FiniteDifferenceProducts()(q.g, {"x": torch.ones(6, dtype=F64)}, {"y": torch.ones(4, dtype=F64)},
                                   {"y": torch.tensor([1.0, float("inf"), 0.0, 0.0], dtype=F64)}, None)


def test_products_bound_once_give_the_one_off_products() -> None:
    """``at`` reuses features, base gradient and graph; the numbers are those of one-off calls."""
    _, problem, x, y, v, batch = _real_run_state("hyper-representation")
    w = {k: torch.flip(t, dims=(0,)) for k, t in v.items()}
    for oracle in (AutogradProducts(), FiniteDifferenceProducts(scheme="forward")):
        bound = oracle.at(problem.g, x, y, batch)
        for direction in (v, w, v):
            one_yy, one_xy = oracle(problem.g, x, y, direction, batch)
            assert one_xy is not None
            torch.testing.assert_close(bound.hyy(direction), one_yy, rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(bound.hxy(direction), one_xy, rtol=1e-6, atol=1e-9)


# ---- linear solvers -------------------------------------------------------------------------------

def _spd(n: int = 12, kappa: float = 1e3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=gen))
    return q @ torch.diag(torch.logspace(0, np.log10(kappa), n, dtype=F64)) @ q.T


def test_conjugate_gradient_solves_an_ill_conditioned_system_where_gd_stalls() -> None:
    """kappa = 1000, n = 12: exact arithmetic needs 12 CG steps; rounding (lost orthogonality)
    costs a few more (here 1.6e-2 at 12, 9e-6 at 13, 8e-13 at 20), while gd at lr = 1/L barely moves."""
    h = _spd()
    b = {"y": torch.arange(12, dtype=F64)}
    solution = torch.linalg.solve(h, b["y"])
    hvp = lambda p: {"y": h @ p["y"]}  # noqa: E731
    zero = {"y": torch.zeros(12, dtype=F64)}
    exact = cg(hvp, b, zero, steps=20)["y"]
    assert float((exact - solution).norm() / solution.norm()) < 1e-10
    slow = gd(hvp, b, zero, steps=20, lr=1e-3)["y"]  # lr = 1/L
    assert float((slow - solution).norm() / solution.norm()) > 0.5


def test_conjugate_gradient_warm_start_and_curvature_guard() -> None:
    h = _spd(kappa=10.0)
    b = {"y": torch.ones(12, dtype=F64)}
    solution = {"y": torch.linalg.solve(h, b["y"])}
    hvp = lambda p: {"y": h @ p["y"]}  # noqa: E731
    calls = []

    def counting(p: Params) -> Params:
        calls.append(1)
        return hvp(p)

    assert torch.equal(cg(counting, b, solution, steps=5, tol=1e-6)["y"], solution["y"])
    assert len(calls) == 1  # the residual of the warm start only: it is already solved
    indefinite = -torch.eye(12, dtype=F64)
    with pytest.warns(IndefiniteSystemWarning):
        kept = cg(lambda p: {"y": indefinite @ p["y"]}, b, {"y": torch.zeros(12, dtype=F64)}, steps=5)
    assert torch.equal(kept["y"], torch.zeros(12, dtype=F64))  # negative curvature: no step, no NaN


@pytest.mark.parametrize("hypergradient", ["finite-difference", "autograd"])
def test_conjugate_gradient_hypergradient_on_the_quadratic(hypergradient: str) -> None:
    """dim y = 4: four CG steps solve the system, where 4 gd steps leave a visible error."""
    q = Quadratic.random(seed=1)
    x = {"x": torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(2))}
    y = {"y": q.y_star(x["x"])}
    exact = q.hypergradient(x["x"])
    cfg = SolverConfig(inner_steps=0, v_steps=4, v_lr=0.4)
    errors = {}
    for solver in ("cg", "gd"):
        est = make_estimator(hypergradient, v_solver=solver)
        _, _, h, _ = est(BilevelProblem(q.g, q.f), cfg, x, y, {"y": torch.zeros(4, dtype=F64)},
                         lambda: None, lambda: None, step=0)
        errors[solver] = float((h["x"] - exact).norm() / exact.norm())
    assert errors["cg"] < 1e-12 and errors["gd"] > 1e-3, errors


def test_fixed_and_fresh_batches_differ_only_in_the_minibatches() -> None:
    """With a deterministic loss (no batch dependence) both give the same hypergradient."""
    q = Quadratic.random(seed=2)
    x = {"x": torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(3))}
    cfg = SolverConfig(inner_steps=3, v_steps=6, v_lr=0.3)
    outs = []
    for batch in ("fixed", "fresh"):
        est = make_estimator("finite-difference", v_batch=batch)
        outs.append(est(BilevelProblem(q.g, q.f), cfg, x, {"y": torch.zeros(4, dtype=F64)},
                        {"y": torch.zeros(4, dtype=F64)}, lambda: None, lambda: None, step=0))
    torch.testing.assert_close(outs[0][2]["x"], outs[1][2]["x"], rtol=1e-12, atol=0)


def test_cg_with_fresh_batches_is_refused_with_one_message() -> None:
    with pytest.raises(ConfigError, match="'v-solver' = 'cg' needs 'v-batch' = 'fixed'"):
        parse_run_config({"v-solver": "cg", "v-batch": "fresh"})
    with pytest.raises(ConfigError, match="fd-scheme"):
        parse_run_config({"fd-scheme": "backward"})
    with pytest.raises(ValueError, match="'v-solver' = 'newton': Input should be 'gd' or 'cg'"):
        make_estimator("autograd", v_solver="newton")
