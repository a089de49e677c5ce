"""A client at ratio r really computes and stores less: measured FLOPs against an analytic count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from client_app.local import local_round
from rabo_protocol import parse_run_config
from rabo_pruning import make_mask_policy, submodel_spec
from tasks import Batch, ClientData, HyperRepresentation, split_params

TASK = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)


def _cost(ratio: float) -> dict[str, float]:
    cfg = parse_run_config({"algorithm": "rabo", "inner-steps": 2, "v-steps": 2, "batch-size": 32,
                            "device": "cpu"})
    gen = torch.Generator().manual_seed(0)
    data = ClientData(
        train=Batch(torch.randn(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen)),
        val=Batch(torch.randn(32, 1, 28, 28, generator=gen), torch.randint(0, 10, (32,), generator=gen)),
    )
    torch.manual_seed(0)
    x, y = split_params(TASK.build_model(TASK.full_widths()), TASK.layers)
    full = {"x": x, "y": y, "v": {k: torch.ones_like(t) for k, t in y.items()}}
    spec = submodel_spec(TASK.layers, ratio, make_mask_policy("static", 0), 1, 0)
    index = spec.indices(TASK.layers, {k: tuple(t.shape) for d in full.values() for k, t in d.items()})
    parts = {p: {k: index[k].take(t.numpy()) for k, t in d.items()} for p, d in full.items()}
    reply, metrics = local_round(TASK, data, cfg, spec.widths(TASK.layers), parts,
                                 server_round=1, partition_id=0)
    assert {k: tuple(a.shape) for k, a in reply["h"].items()} == {
        k: tuple(a.shape) for k, a in parts["x"].items()}
    return metrics


def _gradient_flops(widths: dict[str, int], batch: int) -> int:
    """Analytic FLOPs of one forward and backward pass of the CNN at ``widths`` (2 per multiply-add):
    forward, weight gradients, and input gradients of every layer but the first."""
    (channels, height, width), k = TASK.in_shape, 5
    macs = [widths["conv1"] * channels * k * k * height * width,
            widths["conv2"] * widths["conv1"] * k * k * (height // 2) * (width // 2),
            widths["fc1"] * widths["conv2"] * (height // 4) * (width // 4),
            TASK.num_classes * widths["fc1"]]
    return 2 * batch * (2 * sum(macs) + sum(macs[1:]))


RATIOS = (1.0, 0.5, 0.25, 0.125)


def test_measured_flops_are_the_analytic_count_of_the_kept_layers() -> None:
    """The counter measures exactly the conv / linear work of the sliced submodel, and a whole
    local round costs the same number of such passes at every ratio (its structure does not
    depend on the width: inner steps, v steps and the finite-difference hypergradient)."""
    from client_app.profiling import measure

    passes = {}
    for ratio in RATIOS:
        widths = submodel_spec(TASK.layers, ratio).widths(TASK.layers)
        model = TASK.build_model(widths)
        gen = torch.Generator().manual_seed(1)
        inputs, labels = torch.randn(32, 1, 28, 28, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        with measure(torch.device("cpu"), memory=False) as cost:
            torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        assert cost.flops == _gradient_flops(widths, 32), ratio
        passes[ratio] = _cost(ratio)["flops"] / _gradient_flops(widths, 1)
    # about 3 gradient steps on 32 samples; the share of the unpruned head grows as r shrinks
    assert 90 < passes[1.0] < 105
    for ratio in RATIOS[1:]:
        assert passes[ratio] == pytest.approx(passes[1.0], rel=0.06), (ratio, passes)


def test_quarter_ratio_uses_the_analytic_share_of_flops_and_less_memory() -> None:
    full, quarter = _cost(1.0), _cost(0.25)
    analytic = (_gradient_flops(submodel_spec(TASK.layers, 0.25).widths(TASK.layers), 1)
                / _gradient_flops(TASK.full_widths(), 1))
    assert analytic == pytest.approx(0.0764, abs=1e-3)
    assert quarter["flops-per-step"] / full["flops-per-step"] == pytest.approx(analytic, rel=0.06)
    # measured 0.35 to 0.38 (activations of the kept channels, the parameters, the fixed input batch)
    assert 0.2 <= quarter["peak-memory-mb"] / full["peak-memory-mb"] <= 0.45
    assert quarter["params-x"] <= 0.1 * full["params-x"]
    assert np.isfinite(quarter["outer-loss"])


def test_memory_profiling_prints_nothing() -> None:
    """A profiled client call writes nothing to stderr (Kineto's `USDT ... profiler_start/stop`
    lines and its GPU-count ERROR are silenced)."""
    import subprocess
    import sys

    code = ("import torch\nfrom client_app.profiling import measure\n"
            "with measure(torch.device('cpu'), flops=True, memory=True) as cost:\n"
            "    (torch.ones(64, 64) @ torch.ones(64, 64)).sum()\n"
            "assert cost.peak_bytes > 0 and cost.flops > 0\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "ok" and out.stderr == "", out.stderr
