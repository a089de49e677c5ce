"""Claims the docstrings make, checked numerically on hand-built cases: the step guard's bound on
the step, conjugate gradient's breakdown, the coverage of x on a per-sample task, and where a
client's outer loss gets its clean labels."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord

from bilevel import BilevelProblem, SolverConfig
from bilevel.linear_solve import IndefiniteSystemWarning, cg
from bilevel.quadratic import Quadratic
from bilevel.step_guard import guarded, largest_curvature
from rabo_pruning.aggregation import CoverageAverage
from rabo_pruning.placement import coverage_of, kept_units, place, window
from rabo_pruning.submodel import SliceIndex, SubmodelSpec
from rabo_strategy.round_metrics import round_metrics
from tasks import HyperCleaning
from tasks.partition import DataSpec, client_data

F64 = torch.float64


# ------------------------------------------------------------------------------------ step guard
def _quadratic(eigenvalues: list[float], start: list[float], seed: int = 0) -> tuple[Quadratic, dict, dict]:
    """g(x, y) = 1/2 y^T A y - y^T B x with A = Q diag(eigenvalues) Q^T, and (x, y) at which
    grad_y g = Q start (y = 0, B = Q diag(-start) so that x = 1 gives it): the guard's power
    iterations start with weight ``start[i]`` on the i-th eigenvector."""
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T
    b = q @ torch.diag(-torch.tensor(start, dtype=F64))
    quad = Quadratic(A=a, B=b, c=torch.zeros(n, dtype=F64), D=torch.eye(n, dtype=F64))
    return quad, {"x": torch.ones(n, dtype=F64)}, {"y": torch.zeros(n, dtype=F64)}


def _step_over_limit(quad: Quadratic, x: dict, y: dict, steps: int) -> float:
    """The guarded inner step over the stability limit 2 / lambda_max (inner-lr far above it)."""
    cfg = SolverConfig(inner_lr=1e6, v_lr=1e6, step_guard="curvature", guard_steps=steps)
    capped, _ = guarded(cfg, BilevelProblem(g=quad.g, f=quad.f), x, y, lambda: None)
    top = float(torch.linalg.eigvalsh(quad.A)[-1])
    return capped.inner_lr / (2.0 / top)


@pytest.mark.parametrize("seed", range(6))
def test_a_capped_step_is_at_least_half_the_stability_limit(seed: int) -> None:
    """The documented lower bound, on spectra from well to badly conditioned: the estimate is a
    Rayleigh quotient (never above lambda_max, nondecreasing in the iterations), so the step over the
    limit is at least 1/2, and it tends to 1/2 as the iterations go on."""
    gen = torch.Generator().manual_seed(seed)
    eigenvalues = sorted(torch.logspace(-2, 1 + seed % 3, 8, dtype=F64).tolist())
    quad, x, y = _quadratic(eigenvalues, torch.rand(8, generator=gen, dtype=F64).add(0.01).tolist(), seed)
    ratios = [_step_over_limit(quad, x, y, steps) for steps in (1, 2, 3, 5, 10)]
    assert all(r >= 0.5 * (1 - 1e-9) for r in ratios), ratios
    # the estimate grows with the iterations, so the step shrinks
    assert all(a >= b * (1 - 1e-9) for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    assert _step_over_limit(quad, x, y, 400) == pytest.approx(0.5, rel=1e-3)
    curvatures = [largest_curvature(BilevelProblem(g=quad.g, f=quad.f), x, y, None, s) for s in (1, 3)]
    assert curvatures[0] <= curvatures[1] <= eigenvalues[-1] * (1 + 1e-9)


def test_three_iterations_give_a_step_between_half_the_limit_and_the_limit_not_exactly_half() -> None:
    """A start with equal weight on every eigenvector of an evenly spread spectrum (12 eigenvalues
    from 0.1 to 5): with the default 3 iterations the step is 0.58 of the limit, above half of it
    (a claim of "steps at half the limit" fails here) and below the limit."""
    quad, x, y = _quadratic(torch.linspace(0.1, 5.0, 12, dtype=F64).tolist(), [1.0] * 12)
    ratio = _step_over_limit(quad, x, y, SolverConfig().guard_steps)
    assert 0.55 < ratio < 1.0, ratio


def test_a_start_with_little_weight_on_the_top_eigenvector_passes_the_limit() -> None:
    """No upper bound: lambda_max = 100 with weight 1e-5 on its eigenvector; 3 iterations see
    about 2, and the capped step is more than 10 times the stability limit."""
    quad, x, y = _quadratic([1.0, 2.0, 100.0], [1.0, 1.0, 1e-5])
    assert _step_over_limit(quad, x, y, 3) > 10.0


# ------------------------------------------------------------------------------- CG breakdown
def _hvp(h: torch.Tensor):  # noqa: ANN202 - a product closure
    return lambda p: {"y": h @ p["y"]}


def test_cg_on_an_indefinite_system_warns_and_keeps_the_iterate_reached() -> None:
    zero = {"y": torch.zeros(2, dtype=F64)}
    # p = b = (1, 1) has curvature 1 - 1 = 0: no step at all, v0 returned
    with pytest.warns(IndefiniteSystemWarning, match="curvature p\\^T H p <= 0"):
        v = cg(_hvp(torch.diag(torch.tensor([1.0, -1.0], dtype=F64))), {"y": torch.ones(2, dtype=F64)},
               zero, steps=5)
    assert torch.equal(v["y"], zero["y"])
    # diag(2, -1), b = (1, 1/2): the first direction curves up (one step taken), the second down
    h = torch.diag(torch.tensor([2.0, -1.0], dtype=F64))
    b = {"y": torch.tensor([1.0, 0.5], dtype=F64)}
    with pytest.warns(IndefiniteSystemWarning):
        v = cg(_hvp(h), b, zero, steps=5)
    first_step = float(b["y"] @ b["y"]) / float(b["y"] @ h @ b["y"]) * b["y"]
    assert torch.allclose(v["y"], first_step) and bool(torch.isfinite(v["y"]).all())


def test_cg_on_a_positive_definite_system_does_not_warn() -> None:
    h = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndefiniteSystemWarning)
        v = cg(_hvp(h), {"y": torch.ones(2, dtype=F64)}, {"y": torch.zeros(2, dtype=F64)}, steps=2)
    assert torch.allclose(h @ v["y"], torch.ones(2, dtype=F64))


# -------------------------------------------------------------------- coverage on hyper-cleaning
HC = HyperCleaning(in_shape=(1, 8, 8), num_classes=10, hidden=16)


@pytest.mark.parametrize("ratios", [[1.0, 0.5, 0.25, 0.125], [0.5, 0.5, 0.25], [0.25, 0.25, 0.25, 0.125]])
def test_the_placement_on_hyper_cleaning_serves_the_heads_inputs(ratios: list[float]) -> None:
    """The per-sample weights are no prunable group (sliced by owner, not by ratio), so the
    placement never sees them; its only group is the fixed feature layer fc1, whose unit coverage
    (the placement's C_x*) is the head's input coverage (its C_y*): both objectives place the same
    windows."""
    structure = HC.structure
    assert [g.name for g in structure.groups] == ["fc1"] and "sample.logit" in HC.sample_params
    x_first, y_first = place(structure, ratios, "x-first"), place(structure, ratios, "y-first")
    np.testing.assert_array_equal(x_first.starts, y_first.starts)
    assert x_first.coverage[0] == x_first.coverage[1]
    windows = [[window(16, kept_units(16, r), int(x_first.starts[n, 0]))] for n, r in enumerate(ratios)]
    units = np.bincount(np.concatenate([w[0] for w in windows]), minlength=16)
    assert coverage_of(structure, ratios, windows) == x_first.coverage == (units.min(), units.min())


def _round(owners: dict[int, np.ndarray], ratios: dict[int, float]) -> MetricRecord:
    """The round's metrics when the clients ``owners`` (client -> its sample coordinates) reply."""
    torch.manual_seed(0)
    x, y = HC.init_params(HC.full_widths(), 6)
    shapes = {**{f"x:{k}": tuple(t.shape) for k, t in x.items()},
              **{f"y:{k}": tuple(t.shape) for k, t in y.items()}}
    names = {k.split(":", 1)[1]: s for k, s in shapes.items()}
    acc = CoverageAverage(shapes)
    placement = place(HC.structure, list(ratios.values()))
    for row, (client, ratio) in enumerate(ratios.items()):
        if client not in owners:
            continue
        spec = SubmodelSpec({"fc1": window(16, kept_units(16, ratio), int(placement.starts[row, 0]))})
        index = {**spec.indices(HC.structure, names), "sample.logit": SliceIndex(owners[client])}
        values = {k: np.ones(index[k.split(":", 1)[1]].shape(s)) for k, s in shapes.items()}
        acc.add(values, {k: index[k.split(":", 1)[1]] for k in shapes}, 1.0)
    x_keys, y_keys = [k for k in shapes if k[0] == "x"], [k for k in shapes if k[0] == "y"]
    replies = [MetricRecord({"num-examples": len(owners[c])}) for c in owners]
    return round_metrics(acc, x_keys, y_keys, replies, 0)


def test_coverage_x_on_hyper_cleaning_is_that_of_the_per_sample_weights() -> None:
    """C_x* reported on a per-sample task: 1 when every owner replies (each weight has one owner,
    however well the windows cover fc1), 0 when one sits out. coverage-x-fraction counts every x
    coordinate, fc1's fixed weights included: with half the samples' owners out it is not 1/2."""
    owners = {0: np.array([0, 2, 4]), 1: np.array([1, 3, 5])}
    ratios = {0: 1.0, 1: 1.0}
    both = _round(owners, ratios)
    assert both["coverage-x-min"] == 1 and both["coverage-y-min"] == 2
    alone = _round({0: owners[0]}, ratios)
    assert alone["coverage-x-min"] == 0 and alone["coverage-y-min"] == 1
    fc1 = 16 * 64 + 16
    assert alone["coverage-x-fraction"] == pytest.approx((fc1 + 3) / (fc1 + 6))


# ------------------------------------------------------------- validation labels of a client
NOISY_DIGITS = DataSpec(dataset="sklearn-digits", num_partitions=10, label_noise=0.5)


def test_a_client_without_validation_samples_never_validates_on_noisy_labels() -> None:
    no_val = replace(NOISY_DIGITS, val_fraction=1e-6)
    with pytest.raises(ValueError, match=r"partition-id=0 has no validation samples \(val-fraction=1e-06\)"):
        client_data(no_val, 0)
    clean = client_data(replace(no_val, label_noise=0.0), 0)  # clean labels: f on the train split
    assert clean.val is clean.train


def test_the_hyper_cleaning_presets_partitions_all_hold_validation_samples() -> None:
    """conf/hyper-cleaning.toml's split (val-fraction 0.5), on the test dataset: every client has
    clean validation samples, so the refusal above changes nothing there."""
    for pid in range(NOISY_DIGITS.num_partitions):
        data = client_data(NOISY_DIGITS, pid)
        assert len(data.val) > 0 and data.val is not data.train
