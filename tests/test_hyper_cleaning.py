"""Federated data hyper-cleaning: the weighted inner loss, per-sample coordinates, detection
metrics, and a real bilevel run that down-weights the corrupted samples."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bilevel import BilevelProblem, EstimatorConfig, SolverConfig, make_estimator, rafbo_local
from client_app.sampling import MinibatchSampler, seeded_generator
from tasks import (
    TASKS,
    Batch,
    DataSpec,
    HyperCleaning,
    HyperRepresentation,
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

SPEC = DataSpec(dataset="sklearn-digits", num_partitions=4, label_noise=0.3)
MU = 1e-2
TASK = make_task("hyper-cleaning", SPEC, MU)


def _params(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return TASK.init_params(TASK.full_widths(), len(client_data(SPEC, 0).train))


def _forward_by_hand(y: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    hidden = torch.relu(inputs.flatten(1) @ y["fc1.weight"].T + y["fc1.bias"])
    mean, var = hidden.mean(1, keepdim=True), hidden.var(1, unbiased=False, keepdim=True)
    hidden = (hidden - mean) / torch.sqrt(var + 1e-5)
    return hidden @ y["head.weight"].T + y["head.bias"]


def test_registry_and_interface() -> None:
    assert TASKS == ("hyper-representation", "hyper-representation-mlp", "hyper-cleaning")
    client_side = build_task("hyper-cleaning", (1, 8, 8), 10, MU)
    assert isinstance(client_side, HyperCleaning) and client_side.spec is None
    assert isinstance(TASK, HyperCleaning) and TASK.spec == SPEC and TASK.mu == MU
    assert TASK.sample_params == (LOGIT,)
    assert [(s.name, s.role, s.width, s.prunable) for s in TASK.layers] == [
        ("fc1", "y", 128, True), ("head", "y", 10, False)]
    x, y = _params()
    assert set(x) == {LOGIT} and torch.equal(x[LOGIT], torch.zeros(len(client_data(SPEC, 0).train)))
    assert set(y) == {"fc1.weight", "fc1.bias", "head.weight", "head.bias"}
    assert y["fc1.weight"].shape == (128, 64)
    _, again = _params()
    assert all(torch.equal(y[k], again[k]) for k in y)  # seeded
    _, half = TASK.init_params({"fc1": 32, "head": 10}, 5)
    assert half["fc1.weight"].shape == (32, 64) and half["head.weight"].shape == (10, 32)
    with pytest.raises(ValueError, match="needs the run's DataSpec"):
        _ = client_side.num_samples
    with pytest.raises(ValueError, match="needs the run's DataSpec"):
        client_side.owned_indices(0, 4)


def test_hyper_representation_keeps_its_parameters() -> None:
    task = make_task("hyper-representation", SPEC, MU)
    assert isinstance(task, HyperRepresentation)
    assert task.sample_params == () and task.num_samples == 0 and task.owned_indices(1, 4) == {}
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
    x = {LOGIT: torch.randn(x[LOGIT].shape, generator=torch.Generator().manual_seed(1))}
    train = client_data(SPEC, 0).train
    ids = torch.tensor([5, 0, 17, 3, 42, 9, 11, 100])
    batch = Batch(train.inputs[ids], train.labels[ids], ids)
    model = TASK.build_model(TASK.full_widths())
    logits = _forward_by_hand(y, batch.inputs)
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
    corrupted = torch.as_tensor(corrupted_mask(SPEC)[TASK.owned_indices(0, 4)[LOGIT]])
    x = {LOGIT: torch.where(corrupted, -30.0, 0.0)}  # weights ~1e-13 and 0.5
    ids = torch.arange(40)
    n_clean = int((~corrupted[ids]).sum())
    assert 0 < n_clean < 40
    batch = Batch(train.inputs[ids], train.labels[ids], ids)
    model = TASK.build_model(TASK.full_widths())
    clean = ids[~corrupted[ids]]
    ce_clean = F.cross_entropy(_forward_by_hand(y, train.inputs[clean]), train.labels[clean])
    reg = MU * sum((p**2).sum() for p in y.values())
    expected = 0.5 * (n_clean / 40) * ce_clean + reg  # clean weight 0.5, share n_clean / B
    assert float(TASK.inner_loss(model, x, y, batch)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("num_partitions", [4, 7])
def test_owned_indices_follow_the_clients_train_order(num_partitions: int) -> None:
    spec = replace(SPEC, num_partitions=num_partitions)
    assert TASK.num_samples == num_train_samples(SPEC)
    whole = client_data(replace(SPEC, num_partitions=1), 0).train  # the global train set
    assert TASK.num_samples == len(whole)
    seen = []
    for pid in range(num_partitions):
        owned = TASK.owned_indices(pid, num_partitions)
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
    _, y = _params()
    test = holdout_set(SPEC)
    metrics = TASK.evaluate(model, {LOGIT: logits}, y, test)
    assert metrics["detection-precision"] == pytest.approx(precision)
    assert metrics["detection-recall"] == pytest.approx(recall)
    assert metrics["detection-f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert metrics["test-accuracy"] == pytest.approx(TASK.accuracy(model, {}, y, test))
    assert metrics["test-loss"] == pytest.approx(float(TASK.outer_loss(model, {}, y, test)))
    nothing = TASK.evaluate(model, {LOGIT: torch.zeros(TASK.num_samples)}, y, test)
    assert nothing["detection-precision"] == nothing["detection-recall"] == nothing["detection-f1"] == 0
    perfect = detection_metrics(np.where(corrupted, -1.0, 1.0), corrupted)
    assert perfect == {"detection-precision": 1.0, "detection-recall": 1.0, "detection-f1": 1.0}
    with pytest.raises(ValueError, match="needs the global x"):
        TASK.evaluate(model, {LOGIT: torch.zeros(10)}, y, test)


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
    corrupted = torch.as_tensor(corrupted_mask(spec)[task.owned_indices(0, 2)[LOGIT]])
    assert 0.4 < float(corrupted.float().mean()) < 0.6
    torch.manual_seed(0)
    model = task.build_model(task.full_widths())
    x, y = task.init_params(task.full_widths(), len(data.train))
    v = {k: torch.zeros_like(t) for k, t in y.items()}
    problem = BilevelProblem(g=lambda x_, y_, b: task.inner_loss(model, x_, y_, b),
                             f=lambda x_, y_, b: task.outer_loss(model, x_, y_, b))
    cfg = SolverConfig(inner_steps=5, v_steps=5, outer_steps=12, inner_lr=0.3, v_lr=0.1,
                       outer_lr=100.0)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add contention (0.2 s CPU in all)
    try:
        estimator = make_estimator(EstimatorConfig(name="finite-difference"))
        result = rafbo_local(problem, estimator, cfg, x, y, v,
                             MinibatchSampler(data.train, 128, seeded_generator(0, 0), cpu),
                             MinibatchSampler(data.val, 128, seeded_generator(0, 1), cpu))
    finally:
        torch.set_num_threads(threads)
    weights = torch.sigmoid(result.x[LOGIT])
    w_corrupted, w_clean = float(weights[corrupted].mean()), float(weights[~corrupted].mean())
    assert w_corrupted < 0.4 < 0.6 < w_clean  # started at 0.5 each
    detection = detection_metrics(result.x[LOGIT], corrupted.numpy())
    assert detection["detection-precision"] > 0.9 and detection["detection-f1"] > 0.75
