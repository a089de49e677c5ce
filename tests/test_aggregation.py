"""Per-coordinate aggregation: hand-computed averages, FedAvg equivalence, failures, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from rabo_protocol.flwr_compat import aggregate_arrayrecords
from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning import CoverageAverage, SliceIndex
from server_app.inprocess import InProcessGrid
from tests.fakes import DIGITS_TASK, built_in_strategy, initial_model, noisy_client


def test_coverage_average_matches_hand_computation() -> None:
    acc = CoverageAverage({"b": (5,), "w": (3, 2)})
    # client A (weight 1) covers b[0, 1] and w[0:2, 0]; client B (weight 3) covers b[1, 2], w[1:3, :]
    acc.add({"b": np.array([1.0, 2.0]), "w": np.array([[1.0], [2.0]])},
            {"b": SliceIndex(np.array([0, 1])), "w": SliceIndex(np.array([0, 1]), np.array([0]))}, 1.0)
    acc.add({"b": np.array([6.0, 7.0]), "w": np.array([[4.0, 5.0], [6.0, 7.0]])},
            {"b": SliceIndex(np.array([1, 2])), "w": SliceIndex(np.array([1, 2]), np.array([0, 1]))}, 3.0)
    previous = {"b": np.full(5, -9.0), "w": np.full((3, 2), -9.0)}
    out = acc.average(previous)
    np.testing.assert_allclose(out["b"], [1.0, (2.0 + 3 * 6.0) / 4, 7.0, -9.0, -9.0])
    np.testing.assert_allclose(out["w"], [[1.0, -9.0], [(2.0 + 3 * 4.0) / 4, 5.0], [6.0, 7.0]])
    assert acc.min_coverage(["b"]) == 0 and acc.min_coverage(["w"]) == 0
    np.testing.assert_array_equal(acc.counts["w"], [[1, 0], [2, 1], [1, 1]])


def test_median_and_trimmed_mean_per_coordinate_over_the_covering_clients() -> None:
    """Hand-computed: 5 clients over 4 coordinates covered by 5, 4, 2 and 0 of them; weights are
    ignored by the robust rules (an inflated num-examples buys nothing)."""
    index = {"b": None}
    rows = [  # value per coordinate, None = not covered
        [1.0, 10.0, 3.0, None], [2.0, 20.0, 5.0, None], [3.0, 30.0, None, None],
        [4.0, 40.0, None, None], [1000.0, None, None, None],
    ]
    results = {}
    for rule in ("median", "trimmed-mean", "mean"):
        acc = CoverageAverage({"b": (4,)}, rule, trim=0.2)  # type: ignore[arg-type]
        for k, row in enumerate(rows):
            kept = np.array([j for j, v in enumerate(row) if v is not None])
            index["b"] = SliceIndex(kept)
            acc.add({"b": np.array([row[j] for j in kept])}, dict(index), 1e6 if k == 4 else 1.0)
        results[rule] = acc.average({"b": np.full(4, -9.0)})["b"]
        assert acc.tolerated(["b"]) == 0  # one coordinate is not covered at all
    # median of (1, 2, 3, 4, 1000) = 3; of (10, 20, 30, 40) = 25; of (3, 5) = 4
    np.testing.assert_allclose(results["median"], [3.0, 25.0, 4.0, -9.0])
    # trim floor(0.2 * C): C = 5 drops one at each end -> mean(2, 3, 4); C = 4 and 2 drop none
    np.testing.assert_allclose(results["trimmed-mean"], [3.0, 25.0, 4.0, -9.0])
    assert results["mean"][0] > 999  # the weighted mean follows the inflated client
    acc = CoverageAverage({"b": (2,)}, "median")
    for _ in range(5):
        acc.add({"b": np.ones(2)}, {"b": SliceIndex(np.arange(2))}, 1.0)
    assert acc.tolerated(["b"]) == 2
    with pytest.raises(ValueError, match="unknown aggregation 'mode'; allowed: mean, median, trimmed-mean"):
        CoverageAverage({"b": (2,)}, "mode")  # type: ignore[arg-type]


def _round(algorithm: str, levels: tuple[float, ...], num_nodes: int = 4,
           broken: dict[int, str] | None = None, **kwargs: float):
    grid = InProcessGrid(noisy_client(algorithm, broken), num_nodes, {})
    strategy = built_in_strategy(DIGITS_TASK.layers, algorithm=algorithm, ratio_levels=levels,
                                 outer_lr=kwargs.get("outer_lr", 0.5))
    initial = initial_model(DIGITS_TASK)
    messages = list(strategy.configure_train(1, pack(initial), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    arrays, metrics = strategy.aggregate_train(1, replies)
    return initial, replies, arrays, metrics


def test_full_ratio_rafbo_equals_flower_fedavg() -> None:
    _, replies, arrays, metrics = _round("rafbo", (1.0,))
    expected = aggregate_arrayrecords([r.content for r in replies], "num-examples")
    assert arrays is not None and set(arrays) == set(expected)
    for key in expected:
        np.testing.assert_allclose(arrays[key].numpy(), expected[key].numpy(), rtol=1e-6, atol=1e-6)
    assert metrics["coverage-x-min"] == 4 and metrics["coverage-y-min"] == 4
    # client metrics are averaged with the same weights: sum(pid * 10(pid+1)) / sum(10(pid+1))
    assert metrics["inner-loss"] == pytest.approx((0 * 1 + 1 * 2 + 2 * 3 + 3 * 4) / 10)


def test_full_ratio_rabo_steps_x_with_the_average_hypergradient() -> None:
    initial, replies, arrays, _ = _round("rabo", (1.0,), outer_lr=0.5)
    weights = np.array([10.0, 20.0, 30.0, 40.0]) / 100.0
    for name, x0 in initial["x"].items():
        hs = [unpack(r.content[ARRAYS])["h"][name] for r in replies]
        expected = x0 - 0.5 * sum(w * h for w, h in zip(weights, hs, strict=True))
        np.testing.assert_allclose(arrays[f"x:{name}"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_uncovered_coordinates_keep_their_value() -> None:
    initial, _, arrays, metrics = _round("rafbo", (0.5,))
    new = unpack(arrays)
    np.testing.assert_array_equal(new["x"]["conv1.weight"][8:], initial["x"]["conv1.weight"][8:])
    assert not np.allclose(new["x"]["conv1.weight"][:8], initial["x"]["conv1.weight"][:8])
    assert metrics["coverage-x-min"] == 0 and metrics["coverage-y-min"] == 0


def test_static_masks_coverage_is_the_number_of_full_clients() -> None:
    _, _, _, metrics = _round("rabo", (1.0, 0.5, 0.25, 0.125), num_nodes=8)
    assert metrics["coverage-x-min"] == 2 and metrics["coverage-y-min"] == 2


def test_bad_replies_are_skipped_and_counted() -> None:
    broken = {1: "raise", 2: "shape", 3: "nan"}
    initial, replies, arrays, metrics = _round("rafbo", (1.0,), num_nodes=5, broken=broken)
    assert metrics["failed-replies"] == 3 and metrics["replies"] == 2
    good = [r.content for r in replies if not r.has_error()
            and int(r.metadata.src_node_id) in (1000, 1004)]
    expected = aggregate_arrayrecords(good, "num-examples")
    for key in expected:
        np.testing.assert_allclose(arrays[key].numpy(), expected[key].numpy(), rtol=1e-6, atol=1e-6)


def test_round_without_valid_reply_keeps_the_model() -> None:
    _, _, arrays, metrics = _round("rafbo", (1.0,), num_nodes=2, broken={0: "raise", 1: "raise"})
    assert arrays is None and metrics["failed-replies"] == 2 and metrics["replies"] == 0
