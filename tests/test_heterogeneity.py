"""The remedies for heterogeneous budgets and data: each key's mechanics, checked by hand.

Scaler (HeteroFL), momentum on covered coordinates, the combined mask
policy, and the ``shards`` and ``budget-correlated`` partitioners.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning import make_mask_policy
from rabo_pruning.masks import RoundClient, kept_units
from server_app.inprocess import InProcessGrid
from tasks import (
    DataSpec,
    HyperRepresentation,
    HyperRepresentationMLP,
    OutputScaler,
    client_data,
    num_train_samples,
    train_coordinates,
)
from tasks.partition import partition_ratios
from tests.fakes import DIGITS_TASK, built_in_strategy, initial_model, noisy_client

MLP = HyperRepresentationMLP(in_shape=(1, 28, 28), num_classes=10)


# ------------------------------------------------------------------------------------------ scaler
def _mlp_logits(ratio: float, scaled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (without the bias) of the full MLP and of its static width-``ratio`` slice.

    The head's weights are made positive: the features then add up coherently, as in a trained
    model (random signs would add up like a random walk, sqrt(ratio) instead of ratio)."""
    torch.manual_seed(0)
    full = MLP.build_model(MLP.full_widths())
    keep = kept_units(MLP.hidden, ratio)
    sub = MLP.build_model({"fc1": keep, "head": 10})
    with torch.no_grad():
        sub.fc1.weight.copy_(full.fc1.weight[:keep])
        sub.fc1.bias.copy_(full.fc1.bias[:keep])
        full.head.weight.abs_()
        sub.head.weight.copy_(full.head.weight[:, :keep])
        full.head.bias.zero_()
        sub.head.bias.zero_()
    if scaled:
        OutputScaler(sub, MLP.layers, {"fc1": keep, "head": 10})
    inputs = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return full(inputs), sub(inputs)


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.125])
def test_scaler_gives_a_submodel_the_full_models_logit_scale(ratio: float) -> None:
    full, plain = _mlp_logits(ratio, scaled=False)
    _, scaled = _mlp_logits(ratio, scaled=True)
    keep = kept_units(MLP.hidden, ratio) / MLP.hidden
    # without the scaler the logits sum about ratio * width terms: their scale is about ratio
    assert plain.mean() / full.mean() == pytest.approx(keep, rel=0.15)
    assert scaled.mean() / full.mean() == pytest.approx(1.0, rel=0.15)
    # the scaler multiplies the pruned layer's outputs by exactly width / kept
    torch.testing.assert_close(scaled, plain / keep, rtol=1e-5, atol=1e-5)


def test_scaler_leaves_the_full_model_alone_and_can_be_removed() -> None:
    torch.manual_seed(0)
    model = MLP.build_model(MLP.full_widths())
    assert not OutputScaler(model, MLP.layers, MLP.full_widths()).active
    sub = MLP.build_model({"fc1": 50, "head": 10})
    inputs = torch.randn(4, 1, 28, 28)
    before = sub(inputs)
    scaler = OutputScaler(sub, MLP.layers, {"fc1": 50, "head": 10})
    assert scaler.active and not torch.allclose(sub(inputs), before)
    scaler.remove()
    torch.testing.assert_close(sub(inputs), before)


# ------------------------------------------------------------------------------------- momentum
@pytest.mark.parametrize("scope", ["covered", "all"])
def test_momentum_moves_only_covered_coordinates(scope: str) -> None:
    grid = InProcessGrid(noisy_client("rabo"), 2, {})
    strategy = built_in_strategy(DIGITS_TASK.layers, algorithm="rabo",
                                 ratio_levels=(0.5,), outer_lr=0.5, outer_momentum=0.9, momentum_scope=scope)
    initial = initial_model(DIGITS_TASK)
    old_velocity = {k: np.ones_like(t) for k, t in initial["x"].items()}
    strategy.load_state({"velocity": old_velocity})
    messages = list(strategy.configure_train(1, pack(initial), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    new = unpack(strategy.aggregate_train(1, replies)[0])["x"]["conv1.weight"]
    old = initial["x"]["conv1.weight"]
    weights = np.array([10.0, 20.0]) / 30.0
    h = sum(w * unpack(r.content[ARRAYS])["h"]["conv1.weight"] for w, r in zip(weights, replies, strict=True))
    # covered units 0..7: heavy ball on the averaged hypergradient in both scopes
    np.testing.assert_allclose(new[:8], old[:8] - 0.5 * (0.9 + h), rtol=1e-5, atol=1e-5)
    velocity = strategy.state()["velocity"]["conv1.weight"]
    if scope == "covered":  # units 8..15, which nobody trained: neither x nor its velocity change
        np.testing.assert_array_equal(new[8:], old[8:])
        np.testing.assert_array_equal(velocity[8:], 1.0)
    else:  # they keep moving with the decayed old velocity
        np.testing.assert_allclose(new[8:], old[8:] - 0.5 * 0.9, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(velocity[8:], 0.9)


# --------------------------------------------------------------------------------- combined masks
LAYERS = HyperRepresentation((1, 28, 28), 10).layers


def _units(policy: str, ratios: tuple[float, ...], server_round: int = 1) -> list[dict[str, np.ndarray]]:
    clients = [RoundClient(key, r) for key, r in enumerate(ratios)]
    return [spec.kept for spec in make_mask_policy(policy, 0)(LAYERS, clients, server_round, {})]


@pytest.mark.parametrize("ratios", [(1.0, 0.5, 0.25, 0.125) * 2, (0.5, 0.25, 0.25, 0.125, 0.5)])
def test_combined_masks_nest_the_largest_and_fix_staggered_windows_for_the_rest(
        ratios: tuple[float, ...]) -> None:
    first = _units("combined", ratios, server_round=1)
    largest = max(ratios)
    for server_round in (2, 5):  # the same clients every round: the same submodels every round
        for now, then in zip(_units("combined", ratios, server_round), first, strict=True):
            for name in then:
                np.testing.assert_array_equal(now[name], then[name])
    for layer in LAYERS:
        if not layer.prunable:
            continue
        for n, ratio in enumerate(ratios):
            if ratio == largest:  # the largest clients keep the leading units (nested, as HeteroFL)
                np.testing.assert_array_equal(first[n][layer.name], np.arange(kept_units(layer.width, ratio)))
        covered = np.zeros(layer.width, dtype=int)
        for kept in first:
            covered[kept[layer.name]] += 1
        # the smaller clients cover every unit between them (26 of 16 units without a full-size
        # client: nested static windows would leave half of every layer untrained) ...
        smaller = np.zeros(layer.width, dtype=int)
        for kept, ratio in zip(first, ratios, strict=True):
            if ratio < largest:
                smaller[kept[layer.name]] += 1
        assert covered.min() >= 1
        if sum(kept_units(layer.width, r) for r in ratios if r < largest) >= layer.width:
            assert smaller.min() >= 1, (layer.name, smaller)
    # ... where static masks stack them all on the leading units
    static = _units("static", ratios)
    assert all(k["conv1"].max() < kept_units(16, max(r for r in ratios if r < 1.0)) for k, r in
               zip(static, ratios, strict=True) if r < 1.0)


# ----------------------------------------------------------------------------------- partitioners
def _labels(spec: DataSpec) -> list[np.ndarray]:
    return [client_data(spec, i).train.labels.numpy() for i in range(spec.num_partitions)]


def test_shards_give_each_client_about_k_classes() -> None:
    """k shards of the label-sorted data: k classes, up to 2k where a shard straddles two."""
    spec = DataSpec(dataset="sklearn-digits", num_partitions=10, partitioner="shards", shards_per_client=2)
    classes = [np.count_nonzero(np.bincount(labels, minlength=10)) for labels in _labels(spec)]
    assert max(classes) <= 4 and np.mean(classes) <= 3.2, classes


@pytest.mark.parametrize("correlation", [1.0, 0.9, 0.0])
def test_budget_correlated_split_puts_the_upper_classes_on_the_weak_clients(correlation: float) -> None:
    spec = DataSpec(dataset="sklearn-digits", num_partitions=8, partitioner="budget-correlated",
                    ratio_levels=(1.0, 0.5, 0.25, 0.125), budget_correlation=correlation)
    ratios = partition_ratios(spec)
    assert ratios == (1.0, 0.5, 0.25, 0.125) * 2
    labels = _labels(spec)
    strong = np.concatenate([labels[i] for i in range(8) if ratios[i] == 1.0])
    weak = np.concatenate([labels[i] for i in range(8) if ratios[i] < 1.0])
    upper_on_strong = float(np.mean(strong >= 5))
    upper_on_weak = float(np.mean(weak >= 5))
    if correlation == 1.0:  # a run without the weak clients never sees classes 5..9
        assert upper_on_strong == 0.0 and float(np.mean(weak < 5)) == 0.0
    elif correlation == 0.9:
        assert upper_on_strong < 0.1 and upper_on_weak > 0.85
    else:  # no correlation: both groups hold about half of each
        assert 0.35 < upper_on_strong < 0.65 and 0.35 < upper_on_weak < 0.65
    # a partition: every training sample on exactly one client, the same split for the same seed
    coordinates = np.concatenate([train_coordinates(spec, i) for i in range(8)])
    np.testing.assert_array_equal(np.sort(coordinates), np.arange(num_train_samples(spec)))
    np.testing.assert_array_equal(_labels(spec)[3], labels[3])


# ------------------------------------------------------------------------------------ step guard
def test_curvature_guard_measures_lambda_max_and_caps_the_steps() -> None:
    from bilevel import BilevelProblem, SolverConfig
    from bilevel.estimators.base import inner_descent
    from bilevel.quadratic import Quadratic
    from bilevel.step_guard import guarded, largest_curvature

    q = Quadratic.random(seed=3)
    top = float(torch.linalg.eigvalsh(q.A)[-1])  # H_yy g = A
    problem = BilevelProblem(g=q.g, f=q.f)
    x = {"x": torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))}
    y = {"y": torch.zeros(4, dtype=torch.float64)}
    assert largest_curvature(problem, x, y, None, steps=60) == pytest.approx(top, rel=1e-6)
    # a step of 3 / L > 2 / L diverges; the guard caps it at 1 / L, which converges
    unsafe = SolverConfig(inner_steps=30, inner_lr=3.0 / top, v_lr=0.01, step_guard="curvature",
                          guard_steps=60)
    safe, metrics = guarded(unsafe, problem, x, y, lambda: None)
    assert safe.inner_lr == pytest.approx(1.0 / top, rel=1e-6) and safe.v_lr == 0.01
    assert metrics["curvature"] == pytest.approx(top, rel=1e-6)
    y_star = q.y_star(x["x"])
    start = float(torch.linalg.norm(y["y"] - y_star))
    diverged, _ = inner_descent(problem, unsafe, x, y, lambda: None)
    converged, _ = inner_descent(problem, safe, x, y, lambda: None)
    assert float(torch.linalg.norm(diverged["y"] - y_star)) > 1e3 * start
    assert float(torch.linalg.norm(converged["y"] - y_star)) < 1e-3 * start
    # "none" changes nothing and measures nothing
    off = SolverConfig(inner_lr=1.5, step_guard="none")
    assert guarded(off, problem, x, y, lambda: None) == (off, {})


