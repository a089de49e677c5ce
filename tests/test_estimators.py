"""Outer-iteration estimators against the closed-form quadratic, and the step index the solver passes."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil

import pytest
import torch
from torch.func import grad

import bilevel.estimators
import bilevel.oracles
from bilevel import ESTIMATORS, ORACLES, BilevelProblem, SolverConfig, make_estimator
from bilevel.estimators import F2SAEstimator, Knobs, NeumannEstimator
from bilevel.quadratic import Params, Quadratic
from bilevel.solver import rabo_local, rafbo_local
from rabo_protocol import parse_run_config

F64 = torch.float64
NO_BATCH = lambda: None  # noqa: E731


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _setup(seed: int = 1) -> tuple[Quadratic, BilevelProblem, Params]:
    q = Quadratic.random(seed=seed)
    x = {"x": torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(seed + 1))}
    return q, BilevelProblem(q.g, q.f), x


def _vec(seed: int, n: int = 4) -> Params:
    return {"y": torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(seed))}


def _zeros() -> Params:
    return {"y": torch.zeros(4, dtype=F64)}


# ---- neumann -------------------------------------------------------------------------------------------

def test_neumann_error_decreases_with_the_number_of_terms() -> None:
    q, problem, x = _setup()
    y_star = {"y": q.y_star(x["x"])}
    exact = q.hypergradient(x["x"])
    eta = 0.4  # < 1 / L: the largest eigenvalue of A is < 2 (here about 1.5)
    assert eta * float(torch.linalg.eigvalsh(q.A).max()) < 1
    cfg = SolverConfig(inner_steps=0, v_lr=eta)
    errors = []
    for k in (1, 2, 5, 10, 50):
        y, v, h, _ = NeumannEstimator(steps=k)(problem, cfg, x, y_star, _vec(9), NO_BATCH, NO_BATCH, step=0)
        assert torch.equal(y["y"], y_star["y"])
        if k == 1:  # v = eta * grad_y f = eta * (y - c)
            torch.testing.assert_close(v["y"], eta * (y_star["y"] - q.c), rtol=1e-15, atol=0)
        errors.append(_rel(h["x"], exact))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3, errors


def test_neumann_cold_start_ignores_the_incoming_v() -> None:
    _, problem, x = _setup()
    cfg = SolverConfig(inner_steps=2, v_lr=0.4)
    est = NeumannEstimator(steps=4)
    _, v1, h1, _ = est(problem, cfg, x, _vec(3), _zeros(), NO_BATCH, NO_BATCH, step=0)
    _, v2, h2, _ = est(problem, cfg, x, _vec(3), _vec(4), NO_BATCH, NO_BATCH, step=0)
    assert torch.equal(v1["y"], v2["y"]) and torch.equal(h1["x"], h2["x"])


def test_neumann_equals_warm_start_autograd_from_zero() -> None:
    """K Neumann terms == K warm-start linear steps v <- v - eta (H v - grad_y f) from v = 0."""
    _, problem, x = _setup(seed=5)
    k = 7
    cfg = SolverConfig(inner_steps=3, v_steps=k, inner_lr=0.3, v_lr=0.35)
    yn, vn, hn, mn = make_estimator("neumann", neumann_steps=k)(
        problem, cfg, x, _vec(8), _vec(9), NO_BATCH, NO_BATCH, step=0)
    ya, va, ha, ma = make_estimator("autograd")(
        problem, cfg, x, _vec(8), _zeros(), NO_BATCH, NO_BATCH, step=0)
    torch.testing.assert_close(yn["y"], ya["y"], rtol=0, atol=1e-10)
    torch.testing.assert_close(vn["y"], va["y"], rtol=0, atol=1e-10)
    torch.testing.assert_close(hn["x"], ha["x"], rtol=0, atol=1e-10)
    assert mn == pytest.approx(ma, rel=1e-12)


def test_neumann_needs_one_term() -> None:
    with pytest.raises(ValueError, match="neumann-steps"):
        make_estimator("neumann", neumann_steps=0)


# ---- f2sa ----------------------------------------------------------------------------------------------

def test_f2sa_direction_converges_to_the_hypergradient_like_one_over_lambda() -> None:
    q, problem, x = _setup()
    exact = q.hypergradient(x["x"])
    cfg = SolverConfig(inner_steps=300, inner_lr=0.4)
    lambdas = (1.0, 10.0, 100.0, 1000.0)
    errors = []
    for lam in lambdas:
        est = F2SAEstimator(lambda0=lam, growth=0.0, lambda_max=lam)
        y, v, h, metrics = est(problem, cfg, x, _zeros(), _zeros(), NO_BATCH, NO_BATCH, step=0)
        # near-exact inner solutions: y -> y*, v -> argmin_w f + lam g = (I + lam A)^{-1} (c + lam B x)
        w_lam = torch.linalg.solve(torch.eye(4, dtype=F64) + lam * q.A, q.c + lam * q.B @ x["x"])
        assert _rel(y["y"], q.y_star(x["x"])) < 1e-12 and _rel(v["y"], w_lam) < 1e-12
        assert metrics["f2sa-lambda"] == lam
        errors.append(_rel(h["x"], exact))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    for a, b in zip(errors[1:], errors[2:], strict=False):  # O(1/lambda) once lambda >= 10
        assert 5 < a / b < 20, errors
    assert errors[-1] < 1e-2, errors


def test_f2sa_lambda_schedule_and_direction() -> None:
    """lambda_k = min(max, lambda0 + growth * k); h = grad_x f(v) + lambda (grad_x g(v) - grad_x g(y))."""
    q, problem, x = _setup()
    est = make_estimator("f2sa", f2sa_lambda=2.0, f2sa_lambda_growth=3.0,
                                         f2sa_lambda_max=10.0)
    cfg = SolverConfig(inner_steps=0, v_steps=0)
    y, v = _vec(3), _vec(4)
    for k, expected in enumerate((2.0, 5.0, 8.0, 10.0, 10.0)):
        _, _, h, metrics = est(problem, cfg, x, y, v, NO_BATCH, NO_BATCH, step=k)
        assert metrics["f2sa-lambda"] == expected
        # grad_x f = D x, grad_x g(x, w) = -B^T w
        torch.testing.assert_close(h["x"], q.D @ x["x"] + expected * q.B.T @ (y["y"] - v["y"]))
    result = rafbo_local(problem, est, SolverConfig(inner_steps=1, v_steps=1, outer_steps=2), x, y, v,
                         NO_BATCH, NO_BATCH, first_step=1)
    assert result.metrics["f2sa-lambda"] == 8.0  # the last step, k = 2


def test_f2sa_steps_y_and_v_jointly() -> None:
    """One joint step on the same batch: y <- y - lr grad_y g(y), v <- v - lr / (1 + lambda) (grad_y f(v)
    + lambda grad_y g(v)): y and v descend g in lock-step."""
    _, problem, x = _setup()
    lam, lr = 50.0, 0.3
    y0, v0 = _vec(3), _vec(4)
    y, v, _, _ = F2SAEstimator(lam, 0.0, lam)(problem, SolverConfig(inner_steps=1, inner_lr=lr),
                                              x, y0, v0, NO_BATCH, NO_BATCH, step=0)
    gf, gg = grad(problem.f, argnums=1)(x, v0, None), grad(problem.g, argnums=1)(x, v0, None)
    torch.testing.assert_close(v["y"], v0["y"] - lr / (1 + lam) * (gf["y"] + lam * gg["y"]))
    torch.testing.assert_close(y["y"], y0["y"] - lr * grad(problem.g, argnums=1)(x, y0, None)["y"])


def test_f2sa_starts_v_from_y_when_v_is_zero() -> None:
    _, problem, x = _setup()
    est = make_estimator("f2sa")
    y, v, _, _ = est(problem, SolverConfig(inner_steps=0), x, _vec(3), _zeros(), NO_BATCH, NO_BATCH, step=0)
    assert torch.equal(v["y"], _vec(3)["y"])  # v starts from the incoming y
    _, v, _, _ = est(problem, SolverConfig(inner_steps=0), x, _vec(3), _vec(4), NO_BATCH, NO_BATCH, step=0)
    assert torch.equal(v["y"], _vec(4)["y"])  # warm start otherwise


def test_f2sa_rejects_bad_lambdas() -> None:
    with pytest.raises(ValueError, match="lambda"):
        make_estimator("f2sa", f2sa_lambda=0.0)
    with pytest.raises(ValueError, match="lambda"):
        make_estimator("f2sa", f2sa_lambda=5.0, f2sa_lambda_max=1.0)
    with pytest.raises(ValueError, match="growth"):
        make_estimator("f2sa", f2sa_lambda_growth=-1.0)


# ---- none ----------------------------------------------------------------------------------------------

def test_none_only_descends_the_inner_problem() -> None:
    q, problem, x = _setup()
    y0, v0 = _vec(3), _vec(4)
    cfg = SolverConfig(inner_steps=4, outer_steps=3, inner_lr=0.3, outer_lr=0.5)
    result = rafbo_local(problem, make_estimator("none"), cfg, x, y0, v0, NO_BATCH, NO_BATCH)
    assert result.h is not None and torch.count_nonzero(result.h["x"]) == 0
    assert torch.equal(result.x["x"], x["x"])
    assert result.v is v0 or torch.equal(result.v["y"], v0["y"])
    assert float(q.g(x, result.y)) < float(q.g(x, y0))
    assert result.metrics["outer-loss"] == pytest.approx(float(q.f(x, result.y)), rel=1e-14)
    assert math.isfinite(result.metrics["inner-loss"])


# ---- all estimators, the registry and the solver -------------------------------------------------------

@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_estimator_reports_the_losses_and_shapes(name: str) -> None:
    _, problem, x = _setup()
    cfg = SolverConfig(inner_steps=2, v_steps=2, inner_lr=0.3, v_lr=0.3)
    y, v, h, metrics = make_estimator(name)(problem, cfg, x, _vec(3), _zeros(),
                                                             NO_BATCH, NO_BATCH, step=3)
    assert h["x"].shape == x["x"].shape and y["y"].shape == v["y"].shape == (4,)
    for key in ("inner-loss", "outer-loss") + (("f2sa-lambda",) if name == "f2sa" else ()):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key])


def test_unknown_estimator_is_rejected() -> None:
    with pytest.raises(ValueError, match="allowed: finite-difference, autograd, neumann, f2sa, none"):
        make_estimator("implicit")


def test_every_oracle_is_an_aid_estimator_and_a_parsed_config_is_not_validated_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry derives one AID estimator per product oracle; the knobs of a parsed run config
    were checked at the boundary and are used as they are."""
    assert ESTIMATORS[:len(ORACLES)] == ORACLES
    cfg = parse_run_config({"fd-alpha": 0.05, "fd-scheme": "forward", "neumann-steps": 3})

    def again(*_: object, **__: object) -> None:
        raise AssertionError("validated twice")

    monkeypatch.setattr(Knobs, "model_validate", again)
    fd = make_estimator("finite-difference", cfg)
    assert (fd.oracle.alpha, fd.oracle.scheme) == (0.05, "forward")  # type: ignore[attr-defined]
    assert make_estimator("neumann", cfg).steps == 3  # type: ignore[attr-defined]


def test_the_estimator_and_oracle_modules_docstring_examples_run() -> None:
    """Every module's runnable example, a new estimator's or knob's included."""
    for package in (bilevel.estimators, bilevel.oracles):
        modules = [package, *(importlib.import_module(f"{package.__name__}.{m.name}")
                              for m in pkgutil.iter_modules(package.__path__))]
        for module in modules:
            assert doctest.testmod(module).failed == 0, module.__name__


class _Recorder:
    """A fake estimator: records (step, x) and returns h = 1."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []

    def __call__(self, problem: BilevelProblem, cfg: SolverConfig, x: Params, y: Params, v: Params,
                 next_train: object, next_val: object, *, step: int
                 ) -> tuple[Params, Params, Params, dict[str, float]]:
        self.calls.append((step, x["x"].clone()))
        return y, v, {"x": torch.ones_like(x["x"])}, {"inner-loss": 0.0, "outer-loss": float(step)}


def test_solvers_pass_the_global_step_index() -> None:
    _, problem, x = _setup()
    cfg = SolverConfig(outer_steps=3, outer_lr=0.5)
    rec = _Recorder()
    result = rabo_local(problem, rec, cfg, x, _vec(3), _zeros(), NO_BATCH, NO_BATCH, first_step=7)
    assert [s for s, _ in rec.calls] == [7] and torch.equal(result.x["x"], x["x"])
    rec = _Recorder()
    result = rafbo_local(problem, rec, cfg, x, _vec(3), _zeros(), NO_BATCH, NO_BATCH, first_step=4)
    assert [s for s, _ in rec.calls] == [4, 5, 6] and result.metrics["outer-loss"] == 6.0
    for t, (_, seen) in enumerate(rec.calls):  # x <- x - outer_lr * h after each step
        torch.testing.assert_close(seen, x["x"] - 0.5 * t)
    torch.testing.assert_close(result.x["x"], x["x"] - 1.5)
    rec = _Recorder()
    rafbo_local(problem, rec, cfg, x, _vec(3), _zeros(), NO_BATCH, NO_BATCH)
    assert [s for s, _ in rec.calls] == [0, 1, 2]


def test_fedprox_pulls_rafbos_local_outer_steps_toward_the_received_x() -> None:
    """proximal_mu (FedProx's `proximal-mu`): step h + mu (x - x_0). A large mu keeps x closer to
    the received x_0 than mu = 0, and mu = 0 is RAFBO exactly."""
    _, problem, x = _setup()
    y0, v0 = _vec(3), _vec(4)
    est = make_estimator("autograd")

    def moved(mu: float) -> float:
        cfg = SolverConfig(inner_steps=3, v_steps=3, outer_steps=4, outer_lr=0.2, proximal_mu=mu)
        return float((rafbo_local(problem, est, cfg, x, y0, v0, NO_BATCH, NO_BATCH).x["x"] - x["x"]).norm())

    plain = SolverConfig(inner_steps=3, v_steps=3, outer_steps=4, outer_lr=0.2)
    assert moved(0.0) == float((rafbo_local(problem, est, plain, x, y0, v0, NO_BATCH, NO_BATCH).x["x"]
                                - x["x"]).norm()) > 0
    assert moved(2.0) < 0.8 * moved(0.0)


@pytest.mark.parametrize("name", ["finite-difference", "autograd"])
def test_aid_cold_start_solves_from_zero(name: str) -> None:
    """v-warm-start=false: the received v is ignored (the result equals a warm start from v = 0),
    and with few solve steps a good received v is worth something: the warm start from the exact
    solution is closer to the exact hypergradient."""
    q, problem, x = _setup()
    y_star = {"y": q.y_star(x["x"])}
    exact = q.hypergradient(x["x"])
    cfg = SolverConfig(inner_steps=0, v_steps=2, v_lr=0.4)
    grad_y_f = grad(problem.f, argnums=1)(x, y_star, None)
    v_exact = {"y": torch.linalg.solve(q.A, grad_y_f["y"])}  # H_yy v = grad_y f
    cold = make_estimator(name, v_warm_start=False)
    warm = make_estimator(name)
    _, v_cold, h_cold, _ = cold(problem, cfg, x, y_star, v_exact, NO_BATCH, NO_BATCH, step=0)
    _, v_zero, h_zero, _ = warm(problem, cfg, x, y_star, _zeros(), NO_BATCH, NO_BATCH, step=0)
    _, _, h_warm, _ = warm(problem, cfg, x, y_star, v_exact, NO_BATCH, NO_BATCH, step=0)
    torch.testing.assert_close(v_cold["y"], v_zero["y"], rtol=0, atol=0)
    torch.testing.assert_close(h_cold["x"], h_zero["x"], rtol=0, atol=0)
    assert _rel(h_warm["x"], exact) < 1e-6 < _rel(h_cold["x"], exact)
