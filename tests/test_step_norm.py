"""``step-normalization``: FedNova's normalization of replies that ran part of the round's outer
steps, checked against the hand-written formula on one aggregated round."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message

from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_strategy.step_norm import StepNormalization
from server_app.inprocess import InProcessGrid
from tests.fakes import DIGITS_TASK, built_in_strategy, fake_client, initial_model, noisy_update, train_reply

OUTER_STEPS = 4
SHARES = {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0}
"""Partition -> the share of the round's outer steps it reports (k / 4)."""


def _client(algorithm: str, shares: dict[int, object]):
    def train(msg: Message, pid: int) -> Message:
        metrics = {"num-examples": 10 * (pid + 1), "step-share": shares[pid]}
        return train_reply(msg, noisy_update(unpack(msg.content[ARRAYS]), pid, algorithm), metrics)

    return fake_client(lambda pid: {"partition-id": pid}, train)


def _round(algorithm: str, mode: str, shares: dict[int, object] = SHARES):  # type: ignore[assignment]
    grid = InProcessGrid(_client(algorithm, shares), len(shares), {})
    strategy = built_in_strategy(DIGITS_TASK.layers, algorithm=algorithm, ratio_levels=(1.0,), outer_lr=0.5,
                                 outer_steps=OUTER_STEPS, step_normalization=mode)
    initial = initial_model(DIGITS_TASK)
    messages = list(strategy.configure_train(1, pack(initial), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    arrays, metrics = strategy.aggregate_train(1, replies)
    return initial, [unpack(r.content[ARRAYS]) for r in replies], arrays, metrics


def test_fednova_moves_the_model_by_the_normalized_updates_times_the_effective_steps() -> None:
    """x, y, v = old + tau_eff * sum_i p_i (returned_i - old) / s_i, p_i = num-examples / total,
    tau_eff = sum_i p_i s_i, s_i = max(share_i, deadline-min-share = 0.5); the plain mean for ``none``."""
    initial, returned, arrays, metrics = _round("rafbo", "fednova")
    assert arrays is not None and metrics["failed-replies"] == 0
    p = np.array([10.0, 20.0, 30.0, 40.0]) / 100.0
    shares = np.array([max(SHARES[pid], 0.5) for pid in range(4)])  # 1/4 counts as 1/2
    effective = float(p @ shares)
    assert effective == pytest.approx(0.775)
    new = unpack(arrays)
    for part in ("x", "y", "v"):
        for name, old in initial[part].items():
            updates = [r[part][name] - old for r in returned]
            expected = old + effective * sum(w * u / s for w, u, s in zip(p, updates, shares, strict=True))
            np.testing.assert_allclose(new[part][name], expected, rtol=1e-5, atol=1e-6)
    _, _, plain, _ = _round("rafbo", "none")
    name = next(iter(initial["x"]))
    expected_plain = sum(w * r["x"][name] for w, r in zip(p, returned, strict=True))
    np.testing.assert_allclose(unpack(plain)["x"][name], expected_plain, rtol=1e-5, atol=1e-6)
    assert not np.allclose(new["x"][name], expected_plain, atol=1e-4)


def test_whole_rounds_leave_the_average_unchanged() -> None:
    whole = dict.fromkeys(SHARES, 1.0)
    _, _, normalized, _ = _round("rafbo", "fednova", whole)
    _, _, plain, _ = _round("rafbo", "none", whole)
    assert normalized is not None and plain is not None
    for key in plain:
        np.testing.assert_array_equal(normalized[key].numpy(), plain[key].numpy())


@pytest.mark.parametrize("claim", [0.3, 0.0, -0.25, 1.25, math.nan, [0.5]])
def test_a_share_the_server_cannot_check_is_refused_only_when_it_is_used(claim: object) -> None:
    shares = {**SHARES, 0: claim}
    _, _, arrays, metrics = _round("rafbo", "fednova", shares)
    assert arrays is not None and metrics["failed-replies"] == 1 and metrics["replies"] == 3
    with pytest.raises(ValueError, match=r"step-share=.* is not k/4 for a whole k from 1 to 4"):
        StepNormalization("fednova", OUTER_STEPS).share({"step-share": claim})
    if isinstance(claim, float) and not math.isnan(claim):  # a number: kept as a metric, unused
        _, _, _, plain = _round("rafbo", "none", shares)
        assert plain["failed-replies"] == 0


def test_the_key_names_its_values() -> None:
    assert parse_run_config({"step-normalization": "fednova"}).step_normalization == "fednova"
    with pytest.raises(ValueError, match=r"step-normalization.*'none' or 'fednova'"):
        parse_run_config({"step-normalization": "fedavg"})
    assert StepNormalization("none", 4).share({}) == 1.0
    for claim in (True, "half"):  # what a MetricRecord cannot carry, should another path pass it
        with pytest.raises(ValueError, match="step-share"):
            StepNormalization("fednova", 4).share({"step-share": claim})
