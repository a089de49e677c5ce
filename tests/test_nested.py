"""Ordered dropout and self-distillation (client_app/nested.py): a step at a nested width trains
exactly the leading slices, and the distillation term is its formula; nested-coverage's placement
(rabo_pruning/nested.py) on a hand-built case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bilevel import BilevelProblem
from client_app.nested import OrderedDropout, distillation, nested_index
from rabo_protocol import ConfigError, parse_run_config
from rabo_pruning import NESTED_POLICIES, make_mask_policy
from rabo_pruning.nested import core_ratio
from rabo_pruning.policy import RoundClient
from tasks import LayerSpec
from tests.fakes import SMALL_DIGITS_TASK


def test_distillation_is_the_kl_divergence_of_the_softmaxes() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # sample 1: teacher (1/2, 1/2), student (e/(1+e), 1/(1+e)); sample 2: teacher (1/2, 1/2) again
    q1 = [math.e / (1 + math.e), 1 / (1 + math.e)]
    q2 = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]
    expected = (sum(0.5 * math.log(0.5 / q) for q in q1) + sum(0.5 * math.log(0.5 / q) for q in q2)) / 2
    assert float(distillation(student, teacher)) == pytest.approx(expected, rel=1e-6)
    assert float(distillation(teacher, teacher)) == 0.0


def test_the_nested_index_of_the_cnn_is_its_leading_slices() -> None:
    """The CNN (conv1 4, conv2 6, fc1 8 units) at widths of ratio 1/2 holds 2, 3, 4; ratio 1/4
    inside it keeps 1, 2, 2 (ceil of 1, 1.5, 2): fc1 reads conv2's channels 0-1 x 4 positions."""
    index = nested_index(SMALL_DIGITS_TASK, {"conv1": 2, "conv2": 3, "fc1": 4, "head": 10}, 0.25)
    assert index is not None
    as_lists = {k: [None if d is None else d.tolist() for d in dims] for k, dims in index.items()}
    assert as_lists["conv1.weight"][:1] == [[0]]
    assert as_lists["conv2.weight"][:2] == [[0, 1], [0]]
    assert as_lists["fc1.weight"] == [[0, 1], list(range(8))]
    assert as_lists["head.weight"][1] == [0, 1]
    assert nested_index(SMALL_DIGITS_TASK, {"conv1": 2, "conv2": 3, "fc1": 4, "head": 10}, 1.0) is None


def test_a_step_at_a_nested_width_changes_only_its_slices() -> None:
    task = SMALL_DIGITS_TASK
    widths = {"conv1": 2, "conv2": 3, "fc1": 4, "head": 10}
    model = task.build_model(widths)
    torch.manual_seed(0)
    x, y = task.init_params(widths, 0)

    class Step:  # one gradient step on g in x and y: what any estimator's step reads of the losses
        def own_steps(self, solver: object) -> int:
            return 0

        def __call__(self, problem: BilevelProblem, cfg: object, x, y, v, next_train, next_val, *, step):
            batch = next_train()
            gx, gy = torch.func.grad(problem.g, argnums=(0, 1))(x, y, batch)
            return {k: t - gy[k] for k, t in y.items()}, v, {k: gx[k] for k in x}, {}

    from tasks import Batch
    batch = Batch(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    od = OrderedDropout(Step(), task, model, widths, (1.0, 0.5, 0.25), (0, 1, 0))
    step = next(s for s in range(50) if od.draw(s) == 0.25)
    new_y, _, h, _ = od(BilevelProblem(g=lambda *a: torch.tensor(0.0), f=lambda *a: torch.tensor(0.0)),
                         None, x, y, {}, lambda: batch, lambda: batch, step=step)
    # conv1: unit 0 of 2 trained; fc1: units 0-1 of 4; head: the columns of fc1's units 0-1
    assert h["conv1.weight"][0].abs().sum() > 0 and h["conv1.weight"][1].abs().sum() == 0
    assert h["fc1.weight"][:2].abs().sum() > 0 and h["fc1.weight"][2:].abs().sum() == 0
    assert torch.equal(new_y["head.weight"][:, 2:], y["head.weight"][:, 2:])
    assert not torch.equal(new_y["head.weight"][:, :2], y["head.weight"][:, :2])
    draws = {od.draw(s) for s in range(50)}
    assert draws == {0.25, None}  # 1/2 is the client's own width (None), 1 does not fit
    biased = OrderedDropout(Step(), task, model, widths, (1.0, 0.5, 0.25), (0, 1, 0), own_share=0.75)
    own = sum(biased.draw(s) is None for s in range(4000)) / 4000
    assert own == pytest.approx(0.75, abs=0.03) and {biased.draw(s) for s in range(50)} == {0.25, None}
    assert np.isfinite(float(sum(t.sum() for t in h.values())))


def test_the_teacher_scores_each_minibatch_it_is_given() -> None:
    """Minibatches made and freed one after the other often share an id: the teacher must still
    give each its own logits (a cache keyed by id alone returned the first one's)."""
    from tasks import Batch

    task = SMALL_DIGITS_TASK
    widths = {"conv1": 2, "conv2": 3, "fc1": 4, "head": 10}
    model = task.build_model(widths)
    torch.manual_seed(0)
    x, y = task.init_params(widths, 0)
    teacher = OrderedDropout(None, task, model, widths, (1.0, 0.5), (0, 1, 0), 1.0)._teacher(x, y)
    for i in range(20):
        batch = Batch(torch.full((2, 1, 8, 8), float(i)), torch.zeros(2, dtype=torch.long))
        expected = torch.func.functional_call(model, {**x, **y}, (batch.inputs,))
        assert torch.equal(teacher(batch), expected) and teacher(batch) is teacher(batch)
        del batch


def test_distillation_needs_a_nested_policy() -> None:
    with pytest.raises(ConfigError, match="distill-weight=0.5 distils nested widths: it needs "
                                          "mask-policy 'ordered-dropout' or 'nested-coverage' "):
        parse_run_config({"distill-weight": 0.5, "mask-policy": "static"})
    assert parse_run_config({"distill-weight": 0.5, "mask-policy": "nested-coverage"}).distill_weight == 0.5
    with pytest.raises(ConfigError, match="own-width-share=0.5 shapes the nested widths' draw: it needs"):
        parse_run_config({"own-width-share": 0.5, "mask-policy": "coverage"})
    with pytest.raises(ConfigError, match="own-width-share"):
        parse_run_config({"own-width-share": 0.0, "mask-policy": "ordered-dropout"})


def test_nested_coverage_keeps_a_leading_core_and_fills_the_least_covered_units() -> None:
    policy = make_mask_policy("nested-coverage", 0)
    layers = [LayerSpec("fc1", "x", 8, True), LayerSpec("head", "y", 2, False)]
    ratios = (1.0, 0.5, 0.25, 0.125, 0.25)
    specs = policy(layers, [RoundClient(k, r) for k, r in enumerate(ratios)], 3, {})
    # cores (the level below): 4, 2, 1, 1, 1 units -> counts 5 2 1 1 0 0 0 0; the full client
    # takes 4-7, the half client the least covered 2-3, the quarters 4 then 5, the eighth nothing
    assert [s.kept["fc1"].tolist() for s in specs] == [list(range(8)), [0, 1, 2, 3], [0, 4], [0], [0, 5]]
    assert core_ratio(0.5, (1.0, 0.5, 0.25)) == 0.25 and core_ratio(0.25, (1.0, 0.5, 0.25)) == 0.25
    assert core_ratio(0.3, (1.0, 0.5, 0.25)) == 0.25


@pytest.mark.parametrize("policy", NESTED_POLICIES)
def test_a_run_with_nested_widths_and_distillation(tmp_path, policy: str) -> None:
    import json

    from client_app.app import app as client_app
    from server_app.app import run
    from server_app.inprocess import InProcessGrid
    from tests.fakes import FAST_CONFIG

    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 2,
                  "mask-policy": policy, "distill-weight": 1.0}
    rows = json.loads((run(InProcessGrid(client_app, 4, run_config), parse_run_config(run_config))
                       / "metrics.json").read_text())
    assert all(r["replies"] == 4 and r["coverage-x-min"] >= 1 for r in rows[1:])
    assert all(np.isfinite(rows[-1][f"test-loss@{r}"]) for r in ("0.5", "0.25", "0.125"))
