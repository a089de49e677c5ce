"""A client at ratio 1/4 really computes and stores less than a full-size client."""

from __future__ import annotations

import numpy as np
import torch

from client_app.local import local_round
from rabo_strategy import make_mask_policy, submodel_spec
from server_app.config import parse_run_config
from tasks import Batch, ClientData, HyperRepresentation, split_params

TASK = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)


def _cost(ratio: float) -> dict[str, float]:
    cfg = parse_run_config({"inner-steps": 2, "v-steps": 2, "batch-size": 32, "device": "cpu"})
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


def test_quarter_ratio_uses_at_most_035x_flops_and_clearly_less_memory() -> None:
    full, quarter = _cost(1.0), _cost(0.25)
    assert full["flops-per-step"] > 0 and full["peak-memory-mb"] > 0
    assert quarter["flops-per-step"] <= 0.35 * full["flops-per-step"]
    assert quarter["peak-memory-mb"] <= 0.6 * full["peak-memory-mb"]
    assert quarter["params-x"] <= 0.1 * full["params-x"]
    assert np.isfinite(quarter["outer-loss"])
