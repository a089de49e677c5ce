"""Dual pruning of real networks: torchvision's ResNet-18, ResNet-50, MobileNetV3-small and a small
VisionTransformer (built offline, no weights), x = the network up to its features, y = a head."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from client_app.app import app as client_app
from rabo_protocol import ConfigError, parse_run_config
from rabo_pruning import MASK_POLICIES, make_mask_policy
from rabo_pruning.coverage import coverage_bounds, coverage_of, kept_units
from rabo_pruning.masks import RoundClient
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tasks import BackboneTask, Batch, build_task
from tasks.base import LayerSpec
from tasks.graph import UnsupportedNetwork, derive_structure, prune
from tests.fakes import FAST_CONFIG
from tests.networks import BACKBONES, task

BATCH = Batch(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(4))


def _tensors(model: nn.Module) -> dict[str, np.ndarray]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return {k: t.detach().numpy().copy() for k, t in named if t.is_floating_point()}


def _gradient_flops(net: BackboneTask, widths: dict[str, int], params: dict[str, torch.Tensor]) -> int:
    model = net.build_model(widths)
    x = {k: t.clone().requires_grad_() for k, t in params.items() if not k.startswith("head.")}
    y = {k: t.clone().requires_grad_() for k, t in params.items() if k.startswith("head.")}
    with FlopCounterMode(display=False) as counter:
        grads = torch.autograd.grad(net.inner_loss(model, x, y, BATCH), [*x.values(), *y.values()])
    assert all(torch.isfinite(g).all() for g in grads)  # forward and backward run
    return counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_submodels_are_exact_slices_that_run_at_r2_cost(name: str) -> None:
    net = task(name)
    structure = net.structure
    torch.manual_seed(0)
    full_model = net.full_model()
    full = _tensors(full_model)
    full_params = {k: torch.as_tensor(v) for k, v in full.items() if k in dict(full_model.named_parameters())}
    full_flops = _gradient_flops(net, net.full_widths(), full_params)
    assert any("running_mean" in k for k in full) == (name != "vit")  # buffers are covered too
    for ratio in (0.5, 0.25):
        # a coverage window (not the leading units), for one client of this ratio beside a full one
        spec = make_mask_policy("coverage", 0)(structure, [RoundClient(0, 1.0), RoundClient(1, ratio)],
                                               3, {})[1]
        index = spec.indices(structure, {k: v.shape for k, v in full.items()})
        assert set(index) == set(full)
        # the library's own pruning to the same units gives exactly our slices, parameters and buffers
        pruned = _tensors(prune(copy.deepcopy(full_model), net.example(), spec.kept))
        assert set(pruned) == set(full)
        for key, value in pruned.items():
            np.testing.assert_array_equal(index[key].take(full[key]), value, err_msg=key)
            back, hit = np.zeros_like(full[key]), np.zeros(full[key].shape, dtype=np.int64)
            index[key].add_into(back, value)
            index[key].add_into(hit, np.ones(value.shape, dtype=np.int64))
            assert hit.max() == 1 and hit.sum() == value.size  # each coordinate once
            np.testing.assert_array_equal(back, np.where(hit > 0, full[key], 0.0), err_msg=key)
        sub = {k: torch.as_tensor(index[k].take(v.numpy())) for k, v in full_params.items()}
        flops = _gradient_flops(net, spec.widths(structure), sub)
        assert flops <= 1.3 * ratio**2 * full_flops, (ratio, flops / full_flops)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_three_rabo_rounds_with_clients_at_four_ratios(tmp_path: Path, name: str) -> None:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "task": f"tests.networks:{name}_task",
                  "dataset": "sklearn-digits-rgb32", "algorithm": "rabo", "mask-policy": "coverage",
                  "inner-steps": 1, "v-steps": 1, "outer-steps": 1, "batch-size": 8,
                  # an absolute bound: ResNet-50's honest hypergradients have norm 2e3 (RMS 5e-4)
                  "max-update-norm": 1e5}
    run_dir = run(InProcessGrid(client_app, 4, run_config), parse_run_config(run_config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert all(r["replies"] == 4 and r["failed-replies"] == 0 for r in rows[1:])
    assert all(r["coverage-x-min"] >= 1 and r["coverage-y-min"] >= 1 for r in rows[1:])
    assert np.isfinite(rows[-1]["test-loss"])
    model = torch.load(run_dir / "model.pt")["parts"]
    assert all(torch.isfinite(t).all() for part in ("x", "y") for t in model[part].values())


def test_an_op_the_analysis_cannot_prune_is_named() -> None:
    """ShuffleNet's channel shuffle: the tracer fails, and the error says so (no wrong submodel)."""
    import torchvision

    with pytest.raises(UnsupportedNetwork, match="ShuffleNetV2"):
        derive_structure(torchvision.models.shufflenet_v2_x0_5(), torch.zeros(2, 3, 32, 32),
                         lambda _: "x", LayerSpec("fc", "y", 1000, prunable=False))


def test_a_task_factory_by_import_path() -> None:
    net = build_task("tests.networks:vit_task", (3, 32, 32), 10, 1e-3)
    assert isinstance(net, BackboneTask)
    # the embedding dimension (every LayerNorm, attention projection, class token and position
    # embedding) is one group, and each block's MLP hidden units another
    assert sorted(g.width for g in net.structure.groups) == [128, 256, 256, 256, 256]
    with pytest.raises(ValueError, match="does not import"):
        build_task("tests.no_such_module:task", (3, 32, 32), 10, 1e-3)
    # a run with it stops before any round with one message naming the key (no traceback)
    run_config = {**FAST_CONFIG, "task": "tests.no_such_module:task"}
    with pytest.raises(ConfigError, match="'task' = 'tests.no_such_module:task': module "
                                          "'tests.no_such_module' does not import"):
        run(InProcessGrid(client_app, 2, run_config), parse_run_config(run_config))


def test_the_initial_model_does_not_depend_on_what_is_cached() -> None:
    """Deriving the structure or building a submodel draws no number from the caller's generator:
    a run's initial model is the same whether its process derived the structure before or not."""
    from tasks import network

    net = build_task("hyper-representation-resnet", (1, 8, 8), 10, 1e-3)

    def initial() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        net.build_model({g.name: 1 for g in net.structure.groups})
        return net.init_params(net.full_widths())[0]

    network._structure.cache_clear(), network._pruned.cache_clear()
    cold = initial()
    warm = initial()
    assert all(torch.equal(cold[k], warm[k]) for k in cold)


@pytest.mark.parametrize("policy", MASK_POLICIES)
def test_every_mask_policy_keeps_whole_groups_within_the_coverage_bounds(policy: str) -> None:
    """On a ResNet's coupled groups (residual adds, BatchNorms): every policy keeps ceil(r W) units
    of every group, and the round's (C_x*, C_y*) never exceeds the bounds."""
    net = build_task("hyper-representation-resnet", (1, 8, 8), 10, 1e-3)
    structure = net.structure
    torch.manual_seed(0)
    params = {k: v.numpy() for part in net.init_params(net.full_widths()) for k, v in part.items()}
    ratios = [1.0, 0.5, 0.25, 0.125, 0.5, 0.25]
    clients = [RoundClient(key, r) for key, r in enumerate(ratios)]
    specs = make_mask_policy(policy, 0)(structure, clients, 2, params)
    for spec, ratio in zip(specs, ratios, strict=True):
        assert {g.name: len(spec.kept[g.name]) for g in structure.groups} == {
            g.name: kept_units(g.width, ratio) for g in structure.groups}
    kept = [[spec.kept[g.name] for g in structure.groups] for spec in specs]
    bound = coverage_bounds(structure, ratios)
    reached = coverage_of(structure, ratios, kept)
    assert reached[0] <= bound[0] and reached[1] <= bound[1]
    if policy == "coverage":
        assert reached == bound  # both bounds reached here
