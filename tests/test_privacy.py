"""Differential privacy for sliced updates , and Flower's LocalDpMod with RAFBO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod

from client_app import app as client_module
from client_app.privacy import sliced_dp_mod
from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.privacy import COVERAGE, NOISE_KEY
from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning import make_mask_policy
from rabo_strategy import ResourceAdaptiveBilevel
from rabo_strategy.privacy import _accountant, _event, calibrate
from server_app.app import initial_arrays
from server_app.inprocess import InProcessGrid
from server_app.strategies import build_strategy
from tests.fakes import (
    DIGITS_TASK,
    FAST_CONFIG,
    SMALL_DIGITS_TASK,
    STRATEGY_DEFAULTS,
    initial_model,
    profile_reply,
    train_reply,
)

RATIOS = [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
DP = {"dp-clip": 0.5, "dp-noise-multiplier": 2.0}


def _strategy(task=DIGITS_TASK, **keys: object) -> ResourceAdaptiveBilevel:  # noqa: ANN001
    cfg = parse_run_config({**STRATEGY_DEFAULTS, "algorithm": "rafbo", "min-train-nodes": 1,
                            "min-available-nodes": 1, **keys})
    return ResourceAdaptiveBilevel(task.layers, cfg, mask_policy=make_mask_policy("coverage", 0))


def _client(update: float, absent: int | None = None, ratios: list[float] = RATIOS):  # noqa: ANN202
    """Profiles at ``ratios``; trains by adding ``update`` to every coordinate it was sent,
    through :func:`sliced_dp_mod`; partition ``absent`` never replies."""
    def train(msg: Message, context: Context) -> Message:
        sent = unpack(msg.content[ARRAYS])
        trained = {p: {k: v + np.float32(update) for k, v in t.items()} for p, t in sent.items()}
        return train_reply(msg, trained, {"num-examples": 10})

    def client(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if msg.metadata.message_type == "query":
            return profile_reply(msg, {"partition-id": pid, "resource-ratio": ratios[pid]})
        if pid == absent:
            raise RuntimeError("this node never replies")
        return sliced_dp_mod(msg, context, train)

    return client


def _round(strategy: ResourceAdaptiveBilevel, grid: InProcessGrid, model: dict) -> tuple[list, list, dict]:
    messages = list(strategy.configure_train(1, pack(model), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return messages, replies, {"model": unpack(arrays), **dict(metrics)}


def test_clipping_bounds_the_update_norm_in_the_submodel_exactly() -> None:
    """With sigma = 0 the mod leaves only the clip: every reply's update, over its x, y and v slices
    together, has norm C exactly (an update already inside C is returned as it is). One node per
    ratio, the narrow CNN."""
    keys, ratios, task = {**DP, "dp-noise-multiplier": 1e-9}, [1.0, 0.5, 0.25, 0.125], SMALL_DIGITS_TASK
    grid = InProcessGrid(_client(update=0.5, ratios=ratios), len(ratios), keys)
    messages, replies, _ = _round(_strategy(task, **keys), grid, initial_model(task))
    sizes = set()
    for msg, reply in zip(messages, replies, strict=True):
        sent, got = unpack(msg.content[ARRAYS]), unpack(reply.content[ARRAYS])
        squared = sum(float(np.sum((got[p][k].astype(np.float64) - sent[p][k]) ** 2))
                      for p in got for k in got[p])
        sizes.add(sum(v.size for t in sent.values() for v in t.values()))
        assert math.sqrt(squared) == pytest.approx(0.5, rel=1e-5)  # float32 slices
    assert len(sizes) == 4  # four submodel sizes, one norm


def test_noise_is_sigma_c_over_root_coverage_and_the_sum_carries_sigma_c() -> None:
    """Zero updates: each client's noise at coordinate j has std sigma C / sqrt(c_j) (c_j the
    planned coverage the message carries); partition 5 never replies and the server adds its share,
    so the averaged step times c_j has std sigma C at every coverage level. Fixed seeds: the
    figures are the same every run, the 6 % tolerance is a statement about the estimator."""
    grid = InProcessGrid(_client(update=0.0, absent=5), len(RATIOS), DP)
    strategy, model = _strategy(**DP), initial_model(DIGITS_TASK)
    messages, replies, metrics = _round(strategy, grid, model)
    per_count: dict[int, list[np.ndarray]] = {}
    for msg, reply in zip(messages, replies, strict=True):
        if reply.has_error():
            continue
        sent, got, counts = unpack(msg.content[ARRAYS]), unpack(reply.content[ARRAYS]), msg.content[COVERAGE]
        for part, tensors in got.items():
            for name, value in tensors.items():
                c = counts[f"{'x' if part == 'x' else 'y'}:{name}"].numpy()
                noise = value.astype(np.float64) - sent[part][name]
                for level in np.unique(c):
                    per_count.setdefault(int(level), []).append(noise[c == level])
    assert len(per_count) >= 3
    for level, chunks in per_count.items():
        values = np.concatenate(chunks)
        assert np.std(values) == pytest.approx(2.0 * 0.5 / math.sqrt(level), rel=0.06), (level, values.size)
    steps = []
    for part in ("x", "y", "v"):
        for name, new in metrics["model"][part].items():
            counts = strategy.privacy.counts[f"{'x' if part == 'x' else 'y'}:{name}"]
            steps.append(((new.astype(np.float64) - model[part][name]) * counts)[counts > 0])
    assert np.std(np.concatenate(steps)) == pytest.approx(2.0 * 0.5, rel=0.06)
    assert metrics["replies"] == 5 and metrics["failed-replies"] == 1
    assert metrics["coverage-x-min"] >= 1 and metrics["dp-noise-multiplier"] == 2.0
    assert metrics["dp-epsilon"] == pytest.approx(_rdp_epsilon(2.0, 1, 1e-5), rel=1e-3)


def _rdp_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """Independently: ``rounds`` Gaussian mechanisms of noise multiplier sigma have RDP
    rounds * alpha / (2 sigma^2) at every order alpha; converted to (epsilon, delta) by Canonne,
    Kamath and Steinke (2020, Prop. 12) and minimised over the orders dp-accounting uses."""
    orders = np.concatenate([np.linspace(1.01, 8, num=1000), np.arange(8, 64, 0.5), np.arange(64, 257)])
    rdp = rounds * orders / (2 * sigma**2)
    eps = rdp + np.log1p(-1 / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    return float(np.min(eps))


@pytest.mark.parametrize(("sigma", "rounds"), [(1.0, 1), (3.5, 30), (20.0, 30)])
def test_the_accountant_matches_an_independent_rdp_computation(sigma: float, rounds: int) -> None:
    """Without sampling the ledger's epsilon is the RDP of composed Gaussians (to the grid of
    orders: our grid is finer, so ours is at most as large, and within 2 %)."""
    accountant = _accountant(False, 10, 1e-5)
    accountant.compose(_event(sigma, False, 10, 10), rounds)
    ours = _rdp_epsilon(sigma, rounds, 1e-5)
    assert ours * 0.999 <= accountant.get_epsilon(1e-5) <= ours * 1.02


def test_calibration_spends_the_target_and_no_more() -> None:
    sigma = calibrate(4.0, 1e-5, 30, False, 10, 10)
    assert _rdp_epsilon(sigma, 30, 1e-5) <= 4.0 * 1.001 < _rdp_epsilon(sigma / 1.01, 30, 1e-5)


@pytest.mark.parametrize(("keys", "named"), [
    ({"dp-clip": -1.0}, "'dp-clip'"),
    ({"dp-delta": 1.0}, "'dp-delta'"),
    ({"dp-epsilon": 0.0}, "'dp-epsilon'"),
    ({"dp-clip": 1.0, "aggregation": "median"}, "aggregation='mean'"),
    ({"dp-clip": 1.0, "head-rows": "holders"}, "head-rows='covered'"),
    ({"dp-clip": 1.0, "strategy": "flwr:FedAvg", "algorithm": "rafbo"}, "LocalDpMod"),
])
def test_config_errors_name_the_key(keys: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_run_config(keys)


def test_off_by_default_nothing_changes() -> None:
    """dp-clip = 0: the mod hands the ClientApp's reply back as it is (the same object), the
    messages carry no coverage or sigma, replies weigh num-examples, the screen is the config's,
    the metrics and the checkpoint state have no privacy entry."""
    msg = Message(RecordDict(), dst_node_id=1, message_type="train")
    reply = Message(RecordDict(), reply_to=msg)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    assert sliced_dp_mod(msg, context, lambda m, c: reply) is reply
    grid = InProcessGrid(_client(update=0.01), len(RATIOS), {})
    strategy = _strategy(**{"min-agreement": -0.1})
    messages, _, metrics = _round(strategy, grid, initial_model(DIGITS_TASK))
    assert all(COVERAGE not in m.content.array_records and NOISE_KEY not in m.content["config"]
               for m in messages)
    assert strategy.screen.min_agreement == -0.1 and not any(k.startswith("dp-") for k in metrics)
    assert "privacy" not in strategy.state()


def _local_dp_app(epsilon: float, trained: list[Message]) -> ClientApp:
    """The recipe of docs/robustness.md: the project's ClientApp functions, Flower's LocalDpMod on train only
    (as an app-wide mod it also takes the profile query, which carries no ArrayRecord, and fails).
    ``trained`` collects the train function's replies as they reach the mod."""
    def train(msg: Message, context: Context) -> Message:
        trained.append(client_module.train(msg, context))
        return trained[-1]

    wrapped = ClientApp()
    wrapped.query()(client_module.query)
    wrapped.train(mods=[LocalDpMod(clipping_norm=0.1, sensitivity=0.1, epsilon=epsilon, delta=1e-5)])(train)
    wrapped.evaluate()(client_module.evaluate)
    return wrapped


def _one_round(algorithm: str, epsilon: float, trained: list[Message]) -> tuple[list[Message], list[Message]]:
    config = {**FAST_CONFIG, "algorithm": algorithm, "inner-steps": 1, "v-steps": 1, "outer-steps": 1,
              "min-available-nodes": 1, "min-train-nodes": 1, "ratio-levels": "0.5"}
    grid, cfg = InProcessGrid(_local_dp_app(epsilon, trained), 1, config), parse_run_config(config)
    arrays, task = initial_arrays(cfg)
    messages = list(build_strategy(cfg, task).configure_train(1, arrays, ConfigRecord(), grid))
    return messages, list(grid.send_and_receive(messages))


def test_local_dp_mod_clips_and_noises_rafbo_replies_and_refuses_rabo() -> None:
    """RAFBO replies the keys it was sent (sliced or not), so LocalDpMod applies: with a huge
    epsilon the update norm is the clipping norm; with epsilon 8 the rest is Gaussian noise of
    LocalDpMod's std, sensitivity sqrt(2 ln(1.25 / delta)) / epsilon. RABO replies h in x's
    place: LocalDpMod answers with an error naming the key mismatch. One local round per
    algorithm: the epsilon-8 run goes through the recipe's ClientApp, and the huge-epsilon mod is
    called directly on the same message with the same trained reply (a run is deterministic)."""
    np.random.seed(0)  # LocalDpMod draws from numpy's global generator
    trained: list[Message] = []
    messages, noised = _one_round("rafbo", 8.0, trained)
    context = Context(run_id=1, node_id=1000, node_config={}, state=RecordDict(), run_config={})
    clipped = [LocalDpMod(clipping_norm=0.1, sensitivity=0.1, epsilon=1e12, delta=1e-5)(
        msg, context, lambda m, c, r=reply: Message(RecordDict(dict(r.content)), reply_to=m))
        for msg, reply in zip(messages, trained, strict=True)]
    assert len(messages) == len(clipped) == len(noised) == 1 and not any(r.has_error() for r in noised)
    std = 0.1 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 8.0
    for msg, quiet, loud in zip(messages, clipped, noised, strict=True):
        sent, got, with_noise = (unpack(m.content[ARRAYS]) for m in (msg, quiet, loud))
        update = [got[p][k].astype(np.float64) - sent[p][k] for p in got for k in got[p]]
        assert math.sqrt(sum(float(np.sum(u**2)) for u in update)) == pytest.approx(0.1, rel=1e-4)
        noise = np.concatenate([(with_noise[p][k].astype(np.float64) - got[p][k]).ravel()
                                for p in got for k in got[p]])
        assert np.std(noise) == pytest.approx(std, rel=0.05)
    _, rabo = _one_round("rabo", 8.0, [])
    assert len(rabo) == 1
    assert all(r.has_error() and "LocalDpMod expects the keys" in r.error.reason for r in rabo)


def test_the_ledger_survives_a_checkpoint() -> None:
    """The strategy state's ``privacy`` entry goes through torch.save / load(weights_only) and a
    resumed ledger reports the same epsilon as the uninterrupted one."""
    import io

    import torch

    from rabo_strategy.privacy import SlicedPrivacy

    cfg = parse_run_config({**DP, "num-server-rounds": 5})
    first, resumed = SlicedPrivacy(cfg), SlicedPrivacy(cfg)
    first.plan([], {}, {"x": {}, "y": {}}, 10, 10)
    first.release(None, {}, set(), {}, 1)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    resumed.load(torch.load(buffer, weights_only=True))
    resumed.plan([], {}, {"x": {}, "y": {}}, 10, 10)
    first.plan([], {}, {"x": {}, "y": {}}, 10, 10)
    spent = [p.release(None, {}, set(), {}, 2)["dp-epsilon"] for p in (first, resumed)]  # type: ignore[arg-type]
    assert spent[0] == spent[1] == pytest.approx(_rdp_epsilon(2.0, 2, 1e-5), rel=1e-3)
