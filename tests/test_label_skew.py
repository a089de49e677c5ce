"""Label skew: each loss equals its formula on a hand-built batch, the classifier rows are averaged
with the weights worked out by hand, the separated split places every class as stated, and RAFBO's
trust region bounds its local steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord

from bilevel import SolverConfig, rafbo_local
from client_app.local import with_label_prior
from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.wire import METRICS, pack, unpack
from server_app.inprocess import InProcessGrid
from tasks import (
    Batch,
    ClientData,
    DataSpec,
    HyperRepresentation,
    class_counts,
    client_data,
    cross_entropy,
    logit_offsets,
    split_params,
)
from tasks.partition import partition_ratios
from tests.fakes import DIGITS_TASK, built_in_strategy, initial_model, noisy_client

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, 1.5], [1.0, 0.0, 0.0, -1.0]])
LABELS = torch.tensor([0, 1, 1])
COUNTS = torch.tensor([1, 3, 0, 0])  # the client holds classes 0 and 1 (1 and 3 samples)


def _loss(alpha: float, tau: float) -> torch.Tensor:
    offset = logit_offsets(COUNTS, alpha, tau)
    return cross_entropy(LOGITS, Batch(torch.zeros(3, 1), LABELS, logit_offset=offset))


def _by_hand(weights: list[float]) -> torch.Tensor:
    """-log(s_y e^{z_y} / sum_k s_k e^{z_k}), averaged over the batch, for softmax weights s."""
    losses = []
    for z, label in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        denominator = sum(s * math.exp(zk) for s, zk in zip(weights, z, strict=True))
        losses.append(-math.log(weights[label] * math.exp(z[label]) / denominator))
    return torch.tensor(sum(losses) / len(losses))


def test_restricted_softmax_at_0_is_the_masked_loss_and_at_1_the_plain_one() -> None:
    torch.testing.assert_close(_loss(1.0, 0.0), F.cross_entropy(LOGITS, LABELS))
    masked = F.cross_entropy(LOGITS[:, :2], LABELS)  # the softmax over the held classes 0 and 1 only
    torch.testing.assert_close(_loss(0.0, 0.0), masked)
    torch.testing.assert_close(_loss(0.25, 0.0), _by_hand([1, 1, 0.25, 0.25]))
    logits = LOGITS.clone().requires_grad_()
    batch = Batch(torch.zeros(3, 1), LABELS, logit_offset=logit_offsets(COUNTS, 0.0, 0.0))
    (grad,) = torch.autograd.grad(cross_entropy(logits, batch), logits)
    assert torch.all(grad[:, 2:] == 0) and torch.all(grad[:, :2].abs().sum(0) > 0)


def test_logit_adjustment_weights_held_classes_by_their_prior_and_absent_ones_as_uniform() -> None:
    # tau = 1, alpha = 0: the balanced softmax over the held classes, s = (1/4, 3/4, 0, 0)
    torch.testing.assert_close(_loss(0.0, 1.0), _by_hand([0.25, 0.75, 0, 0]))
    # tau = 0.5, alpha = 0.5: s_c = p_c ** 0.5 when held, 0.5 * (1/4) ** 0.5 when absent
    torch.testing.assert_close(_loss(0.5, 0.5), _by_hand([0.5, 0.75 ** 0.5, 0.25, 0.25]))
    assert logit_offsets(COUNTS, 1.0, 0.0) is None  # plain cross-entropy: no offsets at all
    with pytest.raises(ValueError, match="absent-class-weight"):
        logit_offsets(COUNTS, 1.5, 0.0)


def test_the_client_counts_train_and_validation_labels_and_leaves_absent_rows_untouched() -> None:
    task = HyperRepresentation(in_shape=(1, 8, 8), num_classes=10, mu=0.0)
    torch.manual_seed(0)
    model = task.build_model(task.full_widths())
    x, y = split_params(model, task.layers)
    train = Batch(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 1, 0]))
    val = Batch(torch.randn(2, 1, 8, 8), torch.tensor([3, 3]))
    cfg = parse_run_config({"absent-class-weight": 0.0, "logit-adjustment": 1.0})
    data = with_label_prior(ClientData(train=train, val=val), 10, cfg)
    counts = torch.tensor([2, 2, 0, 2] + [0] * 6)  # train and validation labels together
    torch.testing.assert_close(data.train.logit_offset, logit_offsets(counts, 0, 1))
    assert data.val.logit_offset is data.train.logit_offset
    y = {k: t.requires_grad_() for k, t in y.items()}
    grads = torch.autograd.grad(task.inner_loss(model, x, y, data.train), list(y.values()))
    for grad in grads:  # head.weight and head.bias: rows of the absent classes untouched
        assert torch.all(grad[[2, *range(4, 10)]] == 0) and torch.all(grad[[0, 1]].abs().sum() > 0)
    plain = parse_run_config({"absent-class-weight": 1.0, "logit-adjustment": 0.0})
    assert with_label_prior(ClientData(train=train, val=val), 10, plain).train.logit_offset is None


# ---------------------------------------------------------------------------- classifier rows
def _counting(counts: dict[int, object]):
    """:func:`tests.fakes.noisy_client` (num-examples 10 * (pid + 1)), reporting ``counts[pid]``."""
    inner = noisy_client("rafbo")

    def client(msg, context):
        reply = inner(msg, context)
        pid = int(context.node_config["partition-id"])
        if msg.metadata.message_type == "train" and pid in counts:
            reply.content.metric_records[METRICS]["class-counts"] = counts[pid]
        return reply

    return client


COUNTS_BY_NODE = {0: [4, 6] + [0] * 8, 1: [0, 15, 5] + [0] * 7, 2: [20] + [0] * 9}  # node 2: 20 != 30


@pytest.mark.parametrize("rule", ["covered", "holders", "class-balanced"])
def test_classifier_rows_are_averaged_with_the_rules_weights(rule: str) -> None:
    grid = InProcessGrid(_counting(COUNTS_BY_NODE), 3, {})
    strategy = built_in_strategy(DIGITS_TASK.layers, algorithm="rafbo", ratio_levels=(1.0,), head_rows=rule)
    initial = initial_model(DIGITS_TASK)
    replies = list(grid.send_and_receive(strategy.configure_train(1, pack(initial), ConfigRecord(), grid)))
    arrays, metrics = strategy.aggregate_train(1, replies)
    got = {int(r.metadata.src_node_id) - 1000: unpack(r.content["arrays"]) for r in replies}
    if rule == "covered":  # counts are not read: node 2's wrong sum does not matter
        assert metrics["replies"] == 3
        return
    assert metrics["replies"] == 2 and metrics["failed-replies"] == 1  # its counts sum to 20, not 30
    new = unpack(arrays)
    for part in ("y", "v"):
        a, b, old = got[0][part]["head.weight"], got[1][part]["head.weight"], initial[part]["head.weight"]
        expected = old.copy()
        expected[0], expected[2] = a[0], b[2]  # one holder each
        if rule == "holders":  # both hold class 1: by num-examples 10 and 20
            expected[1] = (10 * a[1] + 20 * b[1]) / 30
        else:  # by their samples of class 1: 6 and 15
            expected[1] = (6 * a[1] + 15 * b[1]) / 21
        np.testing.assert_allclose(new[part]["head.weight"], expected, rtol=1e-5, atol=1e-6)
    # x is not class-indexed: averaged over both clients by num-examples
    np.testing.assert_allclose(new["x"]["conv1.bias"],
                               (10 * got[0]["x"]["conv1.bias"] + 20 * got[1]["x"]["conv1.bias"]) / 30,
                               rtol=1e-5, atol=1e-6)
    assert metrics["coverage-y-min"] == 0  # classes 3..9: nobody holds them, nobody trained them


@pytest.mark.parametrize("counts", [[5] * 9, [-1, 11] + [0] * 8, [True] + [9] + [0] * 8, "10", [1.5] * 10])
def test_class_counts_the_server_cannot_check_are_refused(counts: object) -> None:
    grid = InProcessGrid(_counting({0: counts}), 1, {})
    strategy = built_in_strategy(DIGITS_TASK.layers, algorithm="rafbo", ratio_levels=(1.0,),
                                 head_rows="class-balanced", min_train_nodes=1, min_available_nodes=1)
    replies = list(grid.send_and_receive(
        strategy.configure_train(1, pack(initial_model(DIGITS_TASK)), ConfigRecord(), grid)))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None and metrics["failed-replies"] == 1


def test_head_rows_and_the_loss_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="head-rows"):
        parse_run_config({"head-rows": "per-class"})
    with pytest.raises(ConfigError, match="absent-class-weight"):
        parse_run_config({"absent-class-weight": 2.0})


# ---------------------------------------------------------------------------- separated split
def test_the_separated_split_never_lets_the_two_groups_meet() -> None:
    spec = DataSpec(dataset="sklearn-digits", num_partitions=8, partitioner="separated",
                    ratio_levels=(1.0, 0.5, 0.25, 0.125))
    ratios = partition_ratios(spec)
    for i in range(8):
        data = client_data(spec, i)
        held = set(torch.cat([data.train.labels, data.val.labels]).tolist())
        # the full-size clients hold classes 0-4 only, the smaller ones 5-9 only, each most of them
        assert held <= (set(range(5)) if ratios[i] == 1.0 else set(range(5, 10))), (i, held)
        assert len(held) >= 4
    assert class_counts(torch.tensor([3, 3, 0]), 5).tolist() == [1, 0, 0, 2, 0]


# ---------------------------------------------------------------------------- RAFBO trust region
def _fixed_direction(h_norm: float):
    def estimator(problem, cfg, x, y, v, next_train, next_val, *, step):
        return y, v, {k: torch.full_like(t, h_norm / math.sqrt(t.numel())) for k, t in x.items()}, {}
    return estimator


@pytest.mark.parametrize(("h_norm", "clipped"), [(1.0, 0.0), (100.0, 1.0)])
def test_the_trust_region_shortens_each_local_step_to_rho_times_the_received_x(h_norm: float,
                                                                                clipped: float) -> None:
    x0 = {"w": torch.full((4,), 1.5)}  # ||x0|| = 3
    cfg = SolverConfig(outer_steps=3, outer_lr=0.1, outer_trust_region=0.2)
    result = rafbo_local(None, _fixed_direction(h_norm), cfg, x0, {}, {}, lambda: None, lambda: None)
    step = min(0.1 * h_norm, 0.2 * 3.0)  # each of the 3 steps: outer_lr ||h||, or rho ||x0|| = 0.6
    torch.testing.assert_close(result.x["w"], x0["w"] - 3 * step / 2)  # along (1, 1, 1, 1) / 2
    assert result.metrics["outer-steps-clipped"] == clipped
    off = rafbo_local(None, _fixed_direction(h_norm), SolverConfig(outer_steps=3, outer_lr=0.1), x0, {}, {},
                      lambda: None, lambda: None)
    torch.testing.assert_close(off.x["w"], x0["w"] - 3 * 0.1 * h_norm / 2)
    assert "outer-steps-clipped" not in off.metrics
