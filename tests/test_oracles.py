"""Product oracles and the hypergradient against closed forms."""

from __future__ import annotations

import pytest
import torch

from bilevel import BilevelProblem, SolverConfig, make_estimator, make_oracle
from bilevel.oracles import AutogradProducts, FiniteDifferenceProducts
from bilevel.quadratic import Quadratic
from tasks import Batch, HyperRepresentation, split_params


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("name", "tolerance"), [("autograd", 1e-14), ("finite-difference", 1e-12)])
def test_hypergradient_matches_closed_form(name: str, tolerance: float) -> None:
    """float64, 300 inner and v steps: the solves converge, so only rounding is left. Measured:
    autograd 1.4e-16 (tolerance 1e-14, ~70x margin); finite differences 1.8e-14, since the difference
    quotient divides gradient rounding (~1e-16) by 2 alpha = 0.02 (tolerance 1e-12, ~60x margin)."""
    q = Quadratic.random(seed=1)
    x = {"x": torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))}
    zeros = {"y": torch.zeros(4, dtype=torch.float64)}
    cfg = SolverConfig(inner_steps=300, v_steps=300, inner_lr=0.4, v_lr=0.4)
    estimator = make_estimator(name)
    y, v, h, _ = estimator(BilevelProblem(q.g, q.f), cfg, x, zeros, dict(zeros), lambda: None, lambda: None,
                           step=0)
    assert _rel(y["y"], q.y_star(x["x"])) < 1e-8
    assert _rel(h["x"], q.hypergradient(x["x"])) <= tolerance


@pytest.mark.parametrize("oracle", [AutogradProducts(), FiniteDifferenceProducts(alpha=1e-2)])
def test_products_match_exact_matrices(oracle: object) -> None:
    q = Quadratic.random(seed=3)
    gen = torch.Generator().manual_seed(4)
    x = {"x": torch.randn(6, dtype=torch.float64, generator=gen)}
    y = {"y": torch.randn(4, dtype=torch.float64, generator=gen)}
    v = {"y": torch.randn(4, dtype=torch.float64, generator=gen)}
    hyy, hxy = oracle(q.g, x, y, v, None)  # type: ignore[operator]
    assert _rel(hyy["y"], q.A @ v["y"]) < 1e-9
    assert _rel(hxy["x"], -q.B.T @ v["y"]) < 1e-9  # d2g/dxdy = -B^T


def test_finite_difference_leaves_parameters_bit_exact() -> None:
    q = Quadratic.random(seed=5)
    gen = torch.Generator().manual_seed(6)
    x = {"x": torch.randn(6, dtype=torch.float64, generator=gen)}
    y = {"y": torch.randn(4, dtype=torch.float64, generator=gen)}
    v = {"y": torch.randn(4, dtype=torch.float64, generator=gen)}
    before = [t.clone() for t in (x["x"], y["y"], v["y"])]
    FiniteDifferenceProducts(alpha=0.5)(q.g, x, y, v, None)
    for old, new in zip(before, (x["x"], y["y"], v["y"]), strict=True):
        assert torch.equal(old, new)


def test_finite_difference_of_zero_direction_is_zero() -> None:
    q = Quadratic.random()
    x = {"x": torch.ones(6, dtype=torch.float64)}
    y = {"y": torch.ones(4, dtype=torch.float64)}
    hyy, hxy = FiniteDifferenceProducts()(q.g, x, y, {"y": torch.zeros(4, dtype=torch.float64)}, None)
    assert torch.count_nonzero(hyy["y"]) == 0 and hxy is not None and torch.count_nonzero(hxy["x"]) == 0


def test_finite_difference_matches_autograd_on_the_cnn() -> None:
    """Not quadratic: the central difference is O(alpha^2) accurate (float64)."""
    task = HyperRepresentation(in_shape=(1, 8, 8), num_classes=10, mu=1e-3)
    torch.manual_seed(0)
    model = task.build_model(task.full_widths()).double()
    x, y = split_params(model, task.layers)
    v = {k: torch.randn_like(t) for k, t in y.items()}
    batch = Batch(torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,)))
    g = lambda x_, y_, b: task.inner_loss(model, x_, y_, b)  # noqa: E731
    exact_yy, exact_xy = AutogradProducts()(g, x, y, v, batch)
    fd_yy, fd_xy = FiniteDifferenceProducts(alpha=1e-4)(g, x, y, v, batch)
    assert exact_xy is not None and fd_xy is not None
    for k in exact_yy:
        assert _rel(fd_yy[k], exact_yy[k]) < 1e-4
    flat = lambda d: torch.cat([t.flatten() for t in d.values()])  # noqa: E731
    assert _rel(flat(fd_xy), flat(exact_xy)) < 1e-4


def test_unknown_oracle_is_rejected() -> None:
    with pytest.raises(ValueError, match="allowed: finite-difference, autograd"):
        make_oracle("neumann")
