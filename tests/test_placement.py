"""The coverage placement against an exact reference, and the coverage bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rabo_pruning.coverage_reference import optimum
from rabo_pruning.placement import coverage_bounds, coverage_of, kept_units, place, window
from tasks import HyperRepresentation, LayerSpec

CNN = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)
RATIOS = (1.0, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.125)


def _windows(layers: tuple[LayerSpec, ...], ratios: list[float],
             starts: np.ndarray) -> list[list[np.ndarray]]:
    widths = [layer.width for layer in layers if layer.prunable]
    return [[window(w, kept_units(w, r), int(starts[n, p])) for p, w in enumerate(widths)]
            for n, r in enumerate(ratios)]


@st.composite
def small_cases(draw: st.DrawFn) -> tuple[tuple[LayerSpec, ...], list[float]]:
    """Up to 3 hidden layers of width 2-8 (each x or y, most prunable), a head, up to 6 clients."""
    depth = draw(st.integers(1, 3))
    layers = tuple(LayerSpec(f"l{i}", draw(st.sampled_from("xy")), draw(st.integers(2, 8)),
                             prunable=draw(st.sampled_from((True, True, True, False))))
                   for i in range(depth)) + (LayerSpec("head", "y", 3, prunable=False),)
    ratios = sorted(draw(st.lists(st.sampled_from(RATIOS), min_size=1, max_size=6)), reverse=True)
    return layers, ratios


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(small_cases(), st.sampled_from(("x-first", "y-first")))
def test_placement_reaches_the_exact_optimum_on_small_cases(case, objective) -> None:
    layers, ratios = case
    placement = place(layers, ratios, objective)
    # the coverage it reports is the coverage of the windows it returns
    assert coverage_of(layers, ratios, _windows(layers, ratios, placement.starts)) == placement.coverage
    best = optimum(layers, ratios, objective)
    assert placement.coverage == best, (layers, ratios, objective)
    bounds = coverage_bounds(layers, ratios)
    assert best[0] <= bounds[0] and best[1] <= bounds[1]


def test_the_reference_agrees_with_brute_force() -> None:
    """Every window placement enumerated, on cases small enough for it."""
    cases = [
        ((LayerSpec("a", "x", 4, True), LayerSpec("b", "x", 3, True), LayerSpec("h", "y", 2, False)),
         [0.5, 0.5, 0.25]),
        ((LayerSpec("a", "x", 3, True), LayerSpec("b", "y", 4, True), LayerSpec("h", "y", 2, False)),
         [0.75, 0.5, 0.3]),
        ((LayerSpec("a", "x", 4, True), LayerSpec("b", "x", 4, True), LayerSpec("h", "y", 2, False)),
         [0.5, 0.5, 0.5]),
    ]
    for layers, ratios in cases:
        widths = [layer.width for layer in layers if layer.prunable]
        every = set()
        for flat in itertools.product(*[range(w) for _ in ratios for w in widths]):
            starts = np.array(flat).reshape(len(ratios), len(widths))
            every.add(coverage_of(layers, ratios, _windows(layers, ratios, starts)))
        assert optimum(layers, ratios, "x-first") == max(every)
        assert optimum(layers, ratios, "y-first") == max(every, key=lambda c: (c[1], c[0]))


def test_bounds_hold_for_any_kept_units() -> None:
    """Arbitrary unit sets (not windows) never beat the bounds, and ceil rounding counts."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        ratios = list(rng.choice(RATIOS, size=int(rng.integers(1, 12))))
        kept = [[np.sort(rng.choice(layer.width, kept_units(layer.width, r), replace=False))
                 for layer in CNN.layers if layer.prunable] for r in ratios]
        c, b = coverage_of(CNN.layers, ratios, kept), coverage_bounds(CNN.layers, ratios)
        assert c[0] <= b[0] and c[1] <= b[1]
    # 20 clients at r = 0.2 keep 4 of 16 and 7 of 32 units: conv2's weight entries can reach
    # floor(20 * 4 * 7 / (16 * 32)) = 1, where floor(sum r^2) = 0; fc1 (13 of 64) stays at 0
    conv = (LayerSpec("conv1", "x", 16, True), LayerSpec("conv2", "x", 32, True))
    assert coverage_bounds(conv, [0.2] * 20) == (1, 20)
    assert place(conv, [0.2] * 20).coverage == (1, 20)
    assert coverage_bounds(CNN.layers, [0.2] * 20) == (0, 4)


@pytest.mark.parametrize(("ratios", "objective", "expected"), [
    # a greedy placement gives (2, 3) here and plain wrap-around (1, 4); the search meets both bounds
    ([0.75, 0.75, 0.6, 0.6, 0.5, 0.3, 0.3, 0.3], "x-first", (2, 4)),
    # 16 clients at 0.3: C_y* reaches its bound floor(16 * 20 / 64) = 5 when it comes first
    ([0.3] * 16, "y-first", (0, 5)),
    ([0.3] * 16, "x-first", (1, 4)),
    # the default budget mix: the full-size clients set both bounds
    ([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125], "x-first", (3, 5)),
])
def test_placement_on_the_real_widths(ratios: list[float], objective: str, expected: tuple[int, int]) -> None:
    placement = place(CNN.layers, ratios, objective)
    assert placement.coverage == expected
    assert coverage_of(CNN.layers, ratios, _windows(CNN.layers, ratios, placement.starts)) == expected
    bounds = coverage_bounds(CNN.layers, ratios)
    assert expected[0] <= bounds[0] and expected[1] <= bounds[1]


def test_pinned_windows_stay_at_the_leading_units() -> None:
    ratios = [1.0, 0.5, 0.5, 0.25, 0.25]
    pinned = np.zeros((5, 3), dtype=bool)
    pinned[1:3] = True  # the two half-size clients keep leading windows in every layer
    placement = place(CNN.layers, ratios, "x-first", pinned)
    assert np.all(placement.starts[1:3] == 0)


def test_unknown_objective_is_refused() -> None:
    with pytest.raises(ValueError, match="coverage objective 'z-first'; allowed: x-first, y-first"):
        place(CNN.layers, [0.5], "z-first")  # type: ignore[arg-type]
