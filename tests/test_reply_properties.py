"""Property tests: arbitrary reply content never raises past the aggregation.

Hypothesis draws, per node, either an honest reply or one fault with arbitrary parameters (a
bad num-examples of any type or size, any other dtype, any other shape, arbitrary bytes, extra
bytes, a NaN/Inf anywhere, an update past ``max-update-norm``, a missing or unknown array, a
missing or doubled record, a client error, a reply that trained nothing), and every reply carries
arbitrary extra metrics,
including the server's own keys. The built-in strategy and a wrapped plug-in FedAvg must not
raise, must count each faulty reply in ``failed-replies`` and give the model of the same round
with the faulty nodes' replies left out. The draws are derandomized (the same 60 cases on every
machine, so CI cannot fail on a case no one has seen); change ``max_examples`` or the seed to
explore further.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rabo_protocol.wire import ARRAYS, METRICS, pack, unpack
from rabo_pruning import make_mask_policy
from rabo_strategy import ResourceAdaptiveBilevel
from server_app.inprocess import InProcessGrid
from server_app.validation import ValidatedReplies
from tests.fakes import SMALL_DIGITS_TASK as TASK
from tests.fakes import built_in_strategy, fake_client, initial_model, noisy_update
from tests.toy_strategy import NoArguments

DECLARED = 50
"""Every node declares 50 train examples at query time; honest replies claim 5 + partition id."""
MAX_NORM = 1e3
SERVER_KEYS = ["replies", "failed-replies", "num-examples-total", "coverage-x-min", "skipped",
               "tolerated-byzantine-min", "node-id", "round", "bytes-up", "partition-id"]
METRIC_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-100, 100), max_size=3), st.lists(st.floats(allow_nan=True), max_size=3))
NOISE = st.dictionaries(
    st.one_of(st.sampled_from(SERVER_KEYS), st.text("abcdefg-", min_size=1, max_size=6)),
    METRIC_VALUES, max_size=4).map(lambda d: {k: v for k, v in d.items() if k != "class-counts"})
FAULTS = st.one_of(
    st.tuples(st.just("examples"), st.one_of(
        st.integers(-(2**70), 0), st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf]),
        st.integers(DECLARED + 1, 2**70), st.floats(DECLARED + 0.5, 1e300),
        st.lists(st.integers(1, 5), max_size=2), st.just(None))),
    st.tuples(st.just("dtype"), st.sampled_from(
        ["float16", "float64", "int64", "int32", "int8", "uint8", "bool", "complex64"])),
    st.tuples(st.just("shape"), st.lists(st.integers(0, 5), max_size=4).map(tuple)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("oversized"), st.integers(1025, 2**16)),
    st.tuples(st.just("non-finite"), st.tuples(st.sampled_from([math.nan, math.inf, -math.inf]),
                                               st.integers(0, 10**6))),
    st.tuples(st.just("norm"), st.floats(1e4, 1e30)),
    st.tuples(st.just("drop-key"), st.integers(0, 100)),
    st.tuples(st.just("extra-key"), st.sampled_from(["y:ghost", "x:ghost", "w:fc1.weight", "nopart"])),
    st.tuples(st.just("records"), st.sampled_from(["no-arrays", "no-metrics", "two-metrics",
                                                   "metrics-as-config", "empty"])),
    st.tuples(st.just("error"), st.none()),
    st.tuples(st.just("untrained"), st.none()),
)
NODES = st.lists(st.tuples(st.sampled_from([1.0, 0.5, 0.25, 0.125]), st.one_of(st.none(), FAULTS), NOISE),
                 min_size=1, max_size=5)


def _faulty_reply(tensors: dict[str, np.ndarray], sent: dict[str, np.ndarray], examples: int,
                  fault: tuple[str, Any] | None, noise: dict[str, Any], msg: Message) -> Message:
    """The reply ``{arrays: tensors, metrics: num-examples + noise}`` with ``fault`` applied."""
    kind, arg = fault if fault else (None, None)
    if kind == "error":
        raise RuntimeError("client crashed")
    tensors = dict(tensors)
    key = sorted(tensors)[(arg if kind == "drop-key" else 0) % len(tensors)]
    if kind == "dtype":
        tensors[key] = tensors[key].astype(arg)
    elif kind == "shape":
        original = tensors[key].shape
        tensors[key] = np.ascontiguousarray(np.ones(arg, dtype=np.float32))  # 0-d becomes (1,)
        assume(tensors[key].shape != original)
    elif kind == "non-finite":
        value, position = arg
        tensors[key] = tensors[key].copy()
        tensors[key].flat[position % tensors[key].size] = value
    elif kind == "norm":  # the whole update scaled past max-update-norm
        tensors = {k: (sent.get(k, 0) + arg * (t - sent.get(k, 0))).astype(np.float32)
                   for k, t in tensors.items()}
        assume(all(np.all(np.isfinite(t)) for t in tensors.values()))
    elif kind == "drop-key":
        del tensors[key]
    elif kind == "untrained":  # every tensor returned as it was sent (h: zero): nothing trained
        tensors = {k: np.array(sent[k] if k in sent else np.zeros_like(t)) for k, t in tensors.items()}
    elif kind == "extra-key":
        tensors[arg] = np.zeros(3, dtype=np.float32)
    record = ArrayRecord({k: Array(np.ascontiguousarray(t)) for k, t in tensors.items()})
    if kind == "bytes":  # arbitrary bytes behind a tensor's declared dtype and shape
        try:  # (bytes that happen to be a valid finite float32 tensor of that shape are no fault)
            decoded = Array(record[key].dtype, record[key].shape, record[key].stype, arg).numpy()
            assume(not (decoded.shape == tensors[key].shape and decoded.dtype == np.float32
                        and np.all(np.isfinite(decoded))))
        except Exception:  # noqa: BLE001, S110 - undecodable: the fault intended
            pass
        record[key] = Array(record[key].dtype, record[key].shape, record[key].stype, arg)
    if kind == "oversized":
        record[key] = Array(record[key].dtype, record[key].shape, record[key].stype,
                            record[key].data + bytes(arg))
    metrics: dict[str, Any] = {**noise, "num-examples": examples}
    if kind == "examples":
        metrics.pop("num-examples") if arg is None else metrics.update({"num-examples": arg})
    content = RecordDict({ARRAYS: record, METRICS: MetricRecord(metrics)})
    if kind == "records":
        content = {
            "no-arrays": RecordDict({METRICS: MetricRecord(metrics)}),
            "no-metrics": RecordDict({ARRAYS: record}),
            "two-metrics": RecordDict({ARRAYS: record, METRICS: MetricRecord(metrics),
                                       "more": MetricRecord({"num-examples": 1})}),
            "metrics-as-config": RecordDict({ARRAYS: record, METRICS: ConfigRecord({"num-examples": "5"})}),
            "empty": RecordDict(),
        }[arg]
    return Message(content, reply_to=msg)


def _profile(pid: int, ratio: float) -> dict[str, Any]:
    """What every node declares at query time."""
    return {"partition-id": pid, "resource-ratio": ratio, "num-examples": DECLARED}


def _flat(parts: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{p}:{k}": t for p, d in parts.items() for k, t in d.items()}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(algorithm=st.sampled_from(["rabo", "rafbo"]), policy=st.sampled_from(["static", "random", "coverage"]),
       server_round=st.integers(1, 50), nodes=NODES)
def test_the_built_in_strategy_takes_any_reply(
        algorithm: str, policy: str, server_round: int, nodes: list[tuple[float, Any, dict]]) -> None:
    def train(msg: Message, pid: int) -> Message:
        _, fault, noise = nodes[pid]
        sent = unpack(msg.content[ARRAYS])
        out = noisy_update(sent, pid, algorithm)
        return _faulty_reply(_flat(out), _flat(sent), 5 + pid, fault, noise, msg)

    def strategy() -> ResourceAdaptiveBilevel:
        return built_in_strategy(TASK.layers, mask=make_mask_policy(policy, 3), algorithm=algorithm,
                                 ratio_levels=(1.0,), outer_lr=0.5, max_update_norm=MAX_NORM,
                                 min_train_nodes=1, min_available_nodes=1)

    grid = InProcessGrid(fake_client(lambda pid: _profile(pid, nodes[pid][0]), train), len(nodes), {})
    initial = initial_model(TASK)
    built_in = strategy()
    replies = list(grid.send_and_receive(built_in.configure_train(server_round, pack(initial),
                                                                  ConfigRecord(), grid)))
    arrays, metrics = built_in.aggregate_train(server_round, replies)
    good = {1000 + pid for pid, (_, fault, _) in enumerate(nodes) if fault is None}
    assert (metrics["failed-replies"], metrics["replies"]) == (len(nodes) - len(good), len(good))
    assert set(built_in.accepted_ratios) == good
    if not good:
        assert arrays is None
        return
    reference = strategy()
    list(reference.configure_train(server_round, pack(initial), ConfigRecord(), grid))
    expected, _ = reference.aggregate_train(
        server_round, [r for r in replies if r.metadata.src_node_id in good])
    got, want = _flat(unpack(arrays)), _flat(unpack(expected))
    for key, value in got.items():
        assert np.all(np.isfinite(value))
        np.testing.assert_array_equal(value, want[key])


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=NODES)
def test_a_wrapped_plugin_takes_any_reply(nodes: list[tuple[float, Any, dict]]) -> None:
    def train(msg: Message, pid: int) -> Message:
        _, fault, noise = nodes[pid]
        sent = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
        out = {k: a + np.float32(0.01 * (pid + 1)) for k, a in sent.items()}
        return _faulty_reply(out, sent, 5 + pid, fault, noise, msg)

    initial = {k: a.numpy() for k, a in pack(initial_model(TASK)).items()}
    grid = InProcessGrid(fake_client(lambda pid: _profile(pid, 1.0), train), len(nodes), {})
    plugin = NoArguments()
    plugin.min_train_nodes = plugin.min_available_nodes = 1
    wrapped = ValidatedReplies(plugin, MAX_NORM)
    messages = wrapped.configure_train(1, ArrayRecord({k: Array(a) for k, a in initial.items()}),
                                       ConfigRecord(), grid)
    arrays, metrics = wrapped.aggregate_train(1, list(grid.send_and_receive(messages)))
    good = [pid for pid, (_, fault, _) in enumerate(nodes) if fault is None]
    assert (metrics["failed-replies"], metrics["replies"]) == (len(nodes) - len(good), len(good))
    assert set(wrapped.accepted_ratios) == {1000 + pid for pid in good}
    if not good:
        assert arrays is None
        return
    # FedAvg of the good replies, by hand: the model plus the examples-weighted mean shift
    shift = sum((5 + pid) * 0.01 * (pid + 1) for pid in good) / sum(5 + pid for pid in good)
    for key, value in arrays.items():
        np.testing.assert_allclose(value.numpy(), initial[key] + shift, rtol=0, atol=1e-5)
