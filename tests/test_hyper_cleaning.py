"""Federated data hyper-cleaning: the weighted inner loss, the fixed random features (x, never
trained) under a linear head (y), per-sample coordinates, detection metrics, and a real bilevel run
that down-weights the corrupted samples. Convexity of g in y on MNIST:
tests/test_hyper_cleaning_convexity.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bilevel import ESTIMATORS, SolverConfig, make_estimator, rafbo_local
from bilevel.split import SplitLoss
from tasks import (
    TASKS,
    Batch,
    DataSpec,
    FeatureSplit,
    HyperCleaning,
    HyperRepresentation,
    bilevel_problem,
    build_task,
    client_data,
    corrupted_mask,
    holdout_set,
    make_task,
    num_train_samples,
    split_params,
    train_coordinates,
)
from tasks.hyper_cleaning import LOGIT, detection_metrics
from tasks.sampling import MinibatchSampler, seeded_generator

SPEC = DataSpec(dataset="sklearn-digits", num_partitions=4, label_noise=0.3)
MU = 1e-2
TASK = make_task("hyper-cleaning", SPEC, MU)


def _params(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return TASK.init_params(TASK.full_widths(), len(client_data(SPEC, 0).train))


def _features_by_hand(x: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    hidden = torch.relu(inputs.flatten(1) @ x["fc1.weight"].T + x["fc1.bias"])
    mean, var = hidden.mean(1, keepdim=True), hidden.var(1, unbiased=False, keepdim=True)
    return (hidden - mean) / torch.sqrt(var + 1e-5)


def _forward_by_hand(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor],
                     inputs: torch.Tensor) -> torch.Tensor:
    return _features_by_hand(x, inputs) @ y["head.weight"].T + y["head.bias"]


def test_registry_and_interface() -> None:
    assert tuple(TASKS)[:5] == ("hyper-representation", "hyper-representation-mlp", "hyper-cleaning",
                               "hyper-representation-resnet", "hyper-representation-vit")
    client_side = build_task("hyper-cleaning", (1, 8, 8), 10, MU)
    assert isinstance(client_side, HyperCleaning) and client_side.spec is None
    assert isinstance(TASK, HyperCleaning) and TASK.spec == SPEC and TASK.mu == MU
    assert TASK.sample_params == (LOGIT,)
    assert [(s.name, s.role, s.width, s.prunable) for s in TASK.layers] == [
        ("fc1", "x", 256, True), ("head", "y", 10, False)]  # fc1: fixed random features
    x, y = _params()
    assert set(x) == {LOGIT, "fc1.weight", "fc1.bias"}
    assert torch.equal(x[LOGIT], torch.zeros(len(client_data(SPEC, 0).train)))
    assert set(y) == {"head.weight", "head.bias"}  # y: the linear head alone
    assert x["fc1.weight"].shape == (256, 64) and y["head.weight"].shape == (10, 256)
    assert float(x["fc1.weight"].std()) == pytest.approx((2 / 64) ** 0.5, rel=0.05)  # He init
    assert torch.equal(x["fc1.bias"], torch.zeros(256))
    x_again, y_again = _params()
    assert all(torch.equal(x[k], x_again[k]) for k in x)  # seeded
    assert all(torch.equal(y[k], y_again[k]) for k in y)
    half_x, half_y = TASK.init_params({"fc1": 32, "head": 10}, 5)
    assert half_x["fc1.weight"].shape == (32, 64) and half_y["head.weight"].shape == (10, 32)
    assert half_x[LOGIT].shape == (5,)
    with pytest.raises(ValueError, match="needs the run's DataSpec"):
        _ = client_side.num_samples
    with pytest.raises(ValueError, match="needs the run's DataSpec"):
        client_side.sample_coords(0, 4)


def test_hyper_representation_keeps_its_parameters() -> None:
    task = make_task("hyper-representation", SPEC, MU)
    assert isinstance(task, HyperRepresentation)
    assert task.sample_params == () and task.num_samples == 0 and task.sample_coords(1, 4) == {}
    torch.manual_seed(3)
    x, y = task.init_params(task.full_widths(), 0)
    torch.manual_seed(3)
    x_ref, y_ref = split_params(task.build_model(task.full_widths()), task.layers)
    assert x.keys() == x_ref.keys() and all(torch.equal(x[k], x_ref[k]) for k in x)
    assert y.keys() == y_ref.keys() and all(torch.equal(y[k], y_ref[k]) for k in y)
    test = holdout_set(SPEC)
    model = task.build_model(task.full_widths())
    metrics = task.evaluate(model, x, y, test)
    assert metrics["test-accuracy"] == pytest.approx(task.accuracy(model, x, y, test))
    assert metrics["test-loss"] == pytest.approx(float(task.outer_loss(model, x, y, test)))


def test_inner_loss_is_the_weighted_mean_cross_entropy() -> None:
    x, y = _params()
    x = {**x, LOGIT: torch.randn(x[LOGIT].shape, generator=torch.Generator().manual_seed(1))}
    train = client_data(SPEC, 0).train
    ids = torch.tensor([5, 0, 17, 3, 42, 9, 11, 100])
    batch = Batch(train.inputs[ids], train.labels[ids], ids)
    model = TASK.build_model(TASK.full_widths())
    logits = _forward_by_hand(x, y, batch.inputs)
    ce = -(logits - torch.logsumexp(logits, 1, keepdim=True))[torch.arange(8), batch.labels]
    weights = 1 / (1 + torch.exp(-x[LOGIT][ids]))
    expected = (weights * ce).sum() / 8 + MU * sum((p**2).sum() for p in y.values())
    assert float(TASK.inner_loss(model, x, y, batch)) == pytest.approx(float(expected), rel=1e-5)
    # f ignores the weights: plain cross-entropy
    assert float(TASK.outer_loss(model, x, y, batch)) == pytest.approx(float(ce.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="needs Batch.ids"):
        TASK.inner_loss(model, x, y, Batch(batch.inputs, batch.labels))


def test_corrupted_samples_with_very_negative_logits_drop_out_of_g() -> None:
    x, y = _params()
    train = client_data(SPEC, 0).train
    corrupted = torch.as_tensor(corrupted_mask(SPEC)[TASK.sample_coords(0, 4)[LOGIT]])
    x = {**x, LOGIT: torch.where(corrupted, -30.0, 0.0)}  # weights ~1e-13 and 0.5
    ids = torch.arange(40)
    n_clean = int((~corrupted[ids]).sum())
    assert 0 < n_clean < 40
    batch = Batch(train.inputs[ids], train.labels[ids], ids)
    model = TASK.build_model(TASK.full_widths())
    clean = ids[~corrupted[ids]]
    ce_clean = F.cross_entropy(_forward_by_hand(x, y, train.inputs[clean]), train.labels[clean])
    reg = MU * sum((p**2).sum() for p in y.values())
    expected = 0.5 * (n_clean / 40) * ce_clean + reg  # clean weight 0.5, share n_clean / B
    assert float(TASK.inner_loss(model, x, y, batch)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("num_partitions", [4, 7])
def test_sample_coords_follow_the_clients_train_order(num_partitions: int) -> None:
    spec = replace(SPEC, num_partitions=num_partitions)
    assert TASK.num_samples == num_train_samples(SPEC)
    whole = client_data(replace(SPEC, num_partitions=1), 0).train  # the global train set
    assert TASK.num_samples == len(whole)
    seen = []
    for pid in range(num_partitions):
        owned = TASK.sample_coords(pid, num_partitions)
        assert owned.keys() == {LOGIT}
        coords = owned[LOGIT]
        assert np.array_equal(coords, train_coordinates(spec, pid)) and np.all(np.diff(coords) > 0)
        train = client_data(spec, pid).train
        assert torch.equal(whole.inputs[coords], train.inputs)
        assert torch.equal(whole.labels[coords], train.labels)
        seen.append(coords)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(TASK.num_samples))


def test_detection_metrics_on_a_hand_made_x() -> None:
    corrupted = corrupted_mask(SPEC)
    bad, good = np.flatnonzero(corrupted), np.flatnonzero(~corrupted)
    logits = torch.zeros(TASK.num_samples)  # weight 0.5: not flagged
    logits[bad[:10]] = -2.0  # TP = 10
    logits[good[:5]] = -0.1  # FP = 5
    logits[good[5:20]] = 3.0  # confident clean: still not flagged
    logits[bad[10]] = 0.0  # exactly 0.5: not flagged (FN, like every other corrupted one)
    tp, fp, fn = 10, 5, len(bad) - 10
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    model = TASK.build_model(TASK.full_widths())
    x, y = _params()
    x = {k: t for k, t in x.items() if k != LOGIT}  # the fixed features; the logits are global
    test = holdout_set(SPEC)
    metrics = TASK.evaluate(model, {**x, LOGIT: logits}, y, test)
    assert metrics["detection-precision"] == pytest.approx(precision)
    assert metrics["detection-recall"] == pytest.approx(recall)
    assert metrics["detection-f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert metrics["test-accuracy"] == pytest.approx(TASK.accuracy(model, x, y, test))
    assert metrics["test-loss"] == pytest.approx(float(TASK.outer_loss(model, x, y, test)))
    by_hand = F.cross_entropy(_forward_by_hand(x, y, test.inputs), test.labels)
    assert metrics["test-loss"] == pytest.approx(float(by_hand), rel=1e-5)
    nothing = TASK.evaluate(model, {**x, LOGIT: torch.zeros(TASK.num_samples)}, y, test)
    assert nothing["detection-precision"] == nothing["detection-recall"] == nothing["detection-f1"] == 0
    perfect = detection_metrics(np.where(corrupted, -1.0, 1.0), corrupted)
    assert perfect == {"detection-precision": 1.0, "detection-recall": 1.0, "detection-f1": 1.0}
    with pytest.raises(ValueError, match="needs the global x"):
        TASK.evaluate(model, {**x, LOGIT: torch.zeros(10)}, y, test)


def test_sampler_batches_carry_their_positions() -> None:
    train = client_data(SPEC, 0).train
    sample = MinibatchSampler(train, 50, seeded_generator(0, 1), torch.device("cpu"))
    seen = []
    for _ in range(len(train) // 50):
        batch = sample()
        assert batch.ids is not None and len(batch.ids) == 50
        assert torch.equal(train.inputs[batch.ids], batch.inputs)
        assert torch.equal(train.labels[batch.ids], batch.labels)
        seen.append(batch.ids)
    assert len(torch.unique(torch.cat(seen))) == 50 * (len(train) // 50)  # one pass, no repeats


def test_bilevel_training_down_weights_the_corrupted_samples() -> None:
    spec = replace(SPEC, num_partitions=2, label_noise=0.5)
    task = make_task("hyper-cleaning", spec, 1e-3)
    data = client_data(spec, 0)
    corrupted = torch.as_tensor(corrupted_mask(spec)[task.sample_coords(0, 2)[LOGIT]])
    assert 0.4 < float(corrupted.float().mean()) < 0.6
    torch.manual_seed(0)
    model = task.build_model(task.full_widths())
    x, y = task.init_params(task.full_widths(), len(data.train))
    v = {k: torch.zeros_like(t) for k, t in y.items()}
    problem = bilevel_problem(task, model)
    cfg = SolverConfig(inner_steps=5, v_steps=5, outer_steps=12, inner_lr=0.3, v_lr=0.1,
                       outer_lr=100.0)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add contention (0.2 s CPU in all)
    try:
        estimator = make_estimator("finite-difference")
        result = rafbo_local(problem, estimator, cfg, x, y, v,
                             MinibatchSampler(data.train, 128, seeded_generator(0, 0), cpu),
                             MinibatchSampler(data.val, 128, seeded_generator(0, 1), cpu))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(result.x[k], x[k]) for k in ("fc1.weight", "fc1.bias"))  # fixed
    weights = torch.sigmoid(result.x[LOGIT])
    w_corrupted, w_clean = float(weights[corrupted].mean()), float(weights[~corrupted].mean())
    assert w_corrupted < 0.4 < 0.6 < w_clean  # started at 0.5 each
    detection = detection_metrics(result.x[LOGIT], corrupted.numpy())
    assert detection["detection-precision"] > 0.9 and detection["detection-f1"] > 0.75


def test_feature_split_contract() -> None:
    """g and f are declared with their feature split (tasks/base.py FeatureSplit): the full losses
    equal the head losses of the features, the features are the fixed random map and do not
    depend on y, and bilevel_problem hands the solver SplitLosses."""
    x, y = _params()
    x = {**x, LOGIT: torch.randn(x[LOGIT].shape, generator=torch.Generator().manual_seed(4))}
    train, val = client_data(SPEC, 0).train, client_data(SPEC, 0).val
    ids = torch.arange(0, 96, 3)
    batch = Batch(train.inputs[ids], train.labels[ids], ids)
    val_batch = Batch(val.inputs[:32], val.labels[:32])
    model = TASK.build_model(TASK.full_widths())
    assert isinstance(TASK, FeatureSplit)
    z = TASK.features(model, x, batch)
    assert z.shape == (32, 256)
    torch.testing.assert_close(z, _features_by_hand(x, batch.inputs), rtol=1e-5, atol=1e-5)
    other_y = {k: torch.randn_like(t) for k, t in y.items()}
    assert torch.equal(TASK.features(model, {**x, LOGIT: -x[LOGIT]}, batch), z)  # not the logits
    for y_ in (y, other_y):
        torch.testing.assert_close(TASK.inner_loss(model, x, y_, batch),
                                   TASK.inner_head_loss(model, x, y_, z, batch), rtol=1e-6, atol=0)
        z_val = TASK.features(model, x, val_batch)
        torch.testing.assert_close(TASK.outer_loss(model, x, y_, val_batch),
                                   TASK.outer_head_loss(model, x, y_, z_val, val_batch),
                                   rtol=1e-6, atol=0)
    problem = bilevel_problem(TASK, model)
    assert isinstance(problem.g, SplitLoss) and isinstance(problem.f, SplitLoss)
    torch.testing.assert_close(problem.g(x, y, batch), TASK.inner_loss(model, x, y, batch))
    torch.testing.assert_close(problem.f(x, y, val_batch), TASK.outer_loss(model, x, y, val_batch))
    # fc1 enters both losses detached: zero x-gradient there, the logits' gradient is not zero
    for loss, b in ((TASK.inner_loss, batch), (TASK.outer_loss, val_batch)):
        gx = torch.func.grad(lambda x_, loss=loss, b=b: loss(model, x_, y, b))(x)
        assert not torch.any(gx["fc1.weight"]) and not torch.any(gx["fc1.bias"])
    gx = torch.func.grad(lambda x_: TASK.inner_loss(model, x_, y, batch))(x)
    assert torch.any(gx[LOGIT][ids] != 0) and not torch.any(gx[LOGIT][ids + 1])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_fixed_features_get_zero_hypergradient_and_stay_put(estimator: str) -> None:
    """One local RAFBO round (3 outer steps at outer-lr 100) with every estimator: the direction h
    is exactly zero on fc1, fc1 comes back bit-identical, the logits and the head move."""
    data = client_data(SPEC, 0)
    x, y = _params()
    v = {k: torch.zeros_like(t) for k, t in y.items()}
    widths = {"fc1": 32, "head": 10}  # a ratio-1/4 submodel, sliced as the server sends it
    x = {LOGIT: x[LOGIT], "fc1.weight": x["fc1.weight"][:32], "fc1.bias": x["fc1.bias"][:32]}
    y, v = ({"head.weight": p["head.weight"][:, :32], "head.bias": p["head.bias"]} for p in (y, v))
    model = TASK.build_model(widths)
    cfg = SolverConfig(inner_steps=3, v_steps=3, outer_steps=3, inner_lr=0.3, v_lr=0.3,
                       outer_lr=100.0)
    cpu = torch.device("cpu")
    result = rafbo_local(bilevel_problem(TASK, model), make_estimator(estimator),
                         cfg, x, y, v, MinibatchSampler(data.train, 32, seeded_generator(0, 0), cpu),
                         MinibatchSampler(data.val, 32, seeded_generator(0, 1), cpu))
    assert result.h is not None
    for name in ("fc1.weight", "fc1.bias"):
        assert not torch.any(result.h[name]), f"{estimator}: nonzero hypergradient on {name}"
        assert torch.equal(result.x[name], x[name]), f"{estimator}: {name} moved"
    assert not torch.equal(result.y["head.weight"], y["head.weight"])
    if estimator != "none":
        assert torch.any(result.x[LOGIT] != x[LOGIT])
