"""Round-level mask policies (importance, coverage) and capacity assignment (fixed, dynamic)."""

from __future__ import annotations

import numpy as np
import pytest

from rabo_protocol import parse_run_config
from rabo_protocol.presets import Sizing
from rabo_pruning import MASK_POLICIES, CoverageAverage, make_mask_policy
from rabo_pruning.masks import RoundClient
from rabo_pruning.placement import coverage_bounds, kept_units
from rabo_strategy import NodeProfile, RoundSizer
from tasks import HyperRepresentation

TASK = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)
X, Y = TASK.init_params(TASK.full_widths(), 0)
PARAMS = {k: t.numpy() for k, t in {**X, **Y}.items()}
SHAPES = {k: t.shape for k, t in PARAMS.items()}


def min_coverage(policy: str, ratios: list[float], server_round: int = 1,
                 objective: str = "x-first") -> tuple[int, int]:
    """(C_x*, C_y*) of one round in which clients of ``ratios`` train under ``policy``, as the
    server's aggregation counts it."""
    clients = [RoundClient(key, r) for key, r in enumerate(ratios)]
    specs = make_mask_policy(policy, 0, objective)(TASK.layers, clients, server_round, PARAMS)
    acc = CoverageAverage(SHAPES)
    for spec in specs:
        index = spec.indices(TASK.layers, SHAPES)
        acc.add({k: np.ones(index[k].shape(s)) for k, s in SHAPES.items()}, index, 1.0)
    return acc.min_coverage(X), acc.min_coverage(Y)


def test_every_policy_keeps_ceil_ratio_units() -> None:
    clients = [RoundClient(k, r) for k, r in enumerate((1.0, 0.5, 0.25, 0.125, 0.3))]
    for name in MASK_POLICIES:
        specs = make_mask_policy(name, seed=0)(TASK.layers, clients, 3, PARAMS)
        for client, spec in zip(clients, specs, strict=True):
            for layer in TASK.layers:
                if layer.prunable:
                    kept = spec.kept[layer.name]
                    assert len(kept) == kept_units(layer.width, client.ratio), name
                    assert len(np.unique(kept)) == len(kept) and kept.min() >= 0
                    assert kept.max() < layer.width and np.all(np.diff(kept) > 0)


def test_coverage_policy_maximises_the_minimum_coverage() -> None:
    # no client can hold the full model: static leaves the upper half of every layer untrained
    ratios = [0.5] * 4 + [0.25] * 4
    assert min_coverage("static", ratios) == (0, 0)
    assert min_coverage("rolling", ratios) == (0, 0)
    # the bounds: conv2's weight entries floor((4 * 8 * 16 + 4 * 4 * 8) / (16 * 32)) = 1 client,
    # the head reads fc1's units, floor((4 * 32 + 4 * 16) / 64) = 3; every round reaches both
    assert coverage_bounds(TASK.layers, ratios) == (1, 3)
    for rnd in range(1, 6):
        assert min_coverage("coverage", ratios, rnd) == (1, 3)
    # random masks rarely cover every weight entry: C_x* = 0 in all 8 rounds, C_y* at most 2 of 5
    mix = [0.75] * 4 + [0.5] * 4
    assert coverage_bounds(TASK.layers, mix) == (3, 5)
    drawn = [min_coverage("random", mix, rnd) for rnd in range(1, 9)]
    assert max(c[0] for c in drawn) == 0 and max(c[1] for c in drawn) == 2
    assert all(min_coverage("coverage", mix, rnd) == (3, 5) for rnd in range(1, 9))
    # with the default budget mix the full-size clients set the bound of x: 3
    default = [1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5]
    assert min_coverage("coverage", default) == (3, 5) == coverage_bounds(TASK.layers, default)
    assert min_coverage("static", default) == (3, 3)


def test_coverage_counts_of_the_policy_are_the_aggregators() -> None:
    """The placement's own (C_x*, C_y*) is what the server's aggregation counts, in every round
    (the per-round shift moves windows, not coverage), for both objectives."""
    ratios = [0.3] * 16
    for objective, expected in (("x-first", (1, 4)), ("y-first", (0, 5))):
        policy = make_mask_policy("coverage", 0, objective)
        first = policy(TASK.layers, [RoundClient(k, r) for k, r in enumerate(ratios)], 1, PARAMS)
        second = policy(TASK.layers, [RoundClient(k, r) for k, r in enumerate(ratios)], 2, PARAMS)
        assert not np.array_equal(first[0].kept["conv1"], second[0].kept["conv1"])
        for rnd in (1, 2, 7):
            assert min_coverage("coverage", ratios, rnd, objective) == expected


def test_coverage_policy_spreads_units_evenly() -> None:
    ratios = [0.5] * 3 + [0.25] * 2
    specs = make_mask_policy("coverage", 0)(TASK.layers, [RoundClient(k, r) for k, r in enumerate(ratios)],
                                            1, PARAMS)
    for layer in (layer for layer in TASK.layers if layer.prunable):
        counts = np.zeros(layer.width, dtype=int)
        for spec in specs:
            counts[spec.kept[layer.name]] += 1
        # sum k / width = 1.5 + 0.5 = 2 for every layer: each unit exactly twice
        assert counts.min() == counts.max() == 2, layer.name


def test_importance_draws_by_weight_and_bias_norm_with_a_draw_per_client() -> None:
    params = dict(PARAMS)
    weight = np.zeros_like(params["conv1.weight"])
    energy = np.array([3, 9, 1, 7, 5, 0, 2, 8, 4, 6, 10, 11, 12, 13, 14, 15], dtype=float)
    weight[:, 0, 0, 0] = np.sqrt(energy)
    bias = np.zeros(16, dtype=np.float32)
    bias[5] = 30.0  # no weight, the largest bias: the bias counts in the ranking
    params["conv1.weight"], params["conv1.bias"] = weight, bias
    policy = make_mask_policy("importance", 0)
    counts = np.zeros(16)
    draws = []
    for rnd in range(1, 201):
        specs = policy(TASK.layers, [RoundClient(k, 0.25) for k in range(3)], rnd, params)
        draws.append([tuple(s.kept["conv1"]) for s in specs])
        for spec in specs:
            counts[spec.kept["conv1"]] += 1
    assert counts.argmax() == 5 and counts[5] >= 590  # drawn almost every time (600 draws)
    # more energy, kept more often (units 10..15 vs 0..4), but every unit sometimes
    assert counts[[10, 11, 12, 13, 14, 15]].mean() > 2 * counts[[0, 1, 2, 3, 4]].mean()
    assert counts.min() > 0
    # the clients of one round do not all keep the same units (the old top-k gave every client
    # of a ratio the same ones), and the draws are seeded by (seed, round, client, layer)
    assert sum(len(set(d)) > 1 for d in draws) > 150
    again = policy(TASK.layers, [RoundClient(k, 0.25) for k in range(3)], 1, params)
    assert [tuple(s.kept["conv1"]) for s in again] == draws[0]


def _sizer(capacity: str, sizing: Sizing = "resource-adaptive") -> RoundSizer:
    return RoundSizer((1.0, 0.5, 0.25), sizing, capacity, seed=5)


def test_capacity_fixed_or_dynamic() -> None:
    levels = NodeProfile(node_id=7, partition_id=2, ratio=0.25, source="ratio-levels")
    declared = NodeProfile(node_id=8, partition_id=3, ratio=0.5, source="node-config")
    fixed, dynamic = _sizer("fixed"), _sizer("dynamic")
    assert {fixed.ratio(levels, r) for r in range(1, 30)} == {0.25}
    drawn = [dynamic.ratio(levels, r) for r in range(1, 30)]
    assert set(drawn) == {1.0, 0.5, 0.25}  # redrawn from the levels each round
    assert drawn == [_sizer("dynamic").ratio(levels, r) for r in range(1, 30)]  # seeded
    assert {dynamic.ratio(declared, r) for r in range(1, 30)} == {0.5}  # a device limit


@pytest.mark.parametrize(("sizing", "expected"), [
    ("resource-adaptive", [1.0, 0.5, 0.25]), ("full-model", [1.0, 1.0, 1.0]),
    ("drop-weak", [1.0, None, None]),
])
def test_sizing(sizing: Sizing, expected: list[float | None]) -> None:
    sizer = _sizer("fixed", sizing)
    profiles = [NodeProfile(n, n, r, "ratio-levels") for n, r in enumerate((1.0, 0.5, 0.25))]
    assert [sizer.ratio(p, 1) for p in profiles] == expected


def test_tail_keeps_the_trailing_units_and_with_static_covers_both_ends() -> None:
    """``tail`` is ``static`` mirrored; registered by its row alone, the run config accepts it."""
    assert parse_run_config({"mask-policy": "tail"}).mask_policy == "tail"
    clients = [RoundClient(0, 0.5), RoundClient(1, 0.25)]
    tail = make_mask_policy("tail", 0)(TASK.layers, clients, 3, PARAMS)
    static = make_mask_policy("static", 0)(TASK.layers, clients, 3, PARAMS)
    for layer in (layer for layer in TASK.layers if layer.prunable):
        for client, t, s in zip(clients, tail, static, strict=True):
            keep = kept_units(layer.width, client.ratio)
            np.testing.assert_array_equal(t.kept[layer.name], np.arange(layer.width - keep, layer.width))
            np.testing.assert_array_equal(t.kept[layer.name], layer.width - 1 - s.kept[layer.name][::-1])
    # a round of static and tail clients at half the width trains every unit of every layer once
    assert min_coverage("static", [0.5, 0.5]) == (0, 0)
    specs = [make_mask_policy(p, 0)(TASK.layers, [RoundClient(k, 0.5)], 1, PARAMS)[0]
             for k, p in enumerate(("static", "tail"))]
    for layer in (layer for layer in TASK.layers if layer.prunable):
        both = np.concatenate([spec.kept[layer.name] for spec in specs])
        np.testing.assert_array_equal(np.sort(both), np.arange(layer.width))


@pytest.mark.parametrize("name", MASK_POLICIES)
def test_a_round_without_clients_gets_no_masks(name: str) -> None:
    """drop-weak in a round that sampled no full-size client trains nobody: the coverage
    placement raised (reshape of an empty array) and stopped FedNest's 100-client benchmark."""
    assert make_mask_policy(name, seed=0)(TASK.layers, [], 3, PARAMS) == []
