"""Dual pruning: index sets, slicing, scattering, mask policies and real submodels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rabo_pruning import make_mask_policy, submodel_spec
from rabo_pruning.masks import kept_units
from tasks import HyperRepresentation, split_params

TASK = HyperRepresentation(in_shape=(1, 28, 28), num_classes=10)


def _full_arrays() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    x, y = split_params(TASK.build_model(TASK.full_widths()), TASK.layers)
    return {k: t.numpy() for k, t in {**x, **y}.items()}


@pytest.mark.parametrize("policy", ["static", "rolling", "random"])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.25, 0.125])
def test_extract_then_scatter_is_identity_on_covered_coordinates(policy: str, ratio: float) -> None:
    full = _full_arrays()
    spec = submodel_spec(TASK.layers, ratio, make_mask_policy(policy, seed=3), server_round=4,
                         client_key=7)
    index = spec.indices(TASK.layers, {k: a.shape for k, a in full.items()})
    for name, array in full.items():
        part = index[name].take(array)
        assert part.shape == index[name].shape(array.shape)
        rebuilt = np.zeros_like(array)
        mask = np.zeros(array.shape, dtype=bool)
        index[name].add_into(rebuilt, part)
        index[name].add_into(mask, np.ones(part.shape, dtype=bool))
        np.testing.assert_array_equal(rebuilt[mask], array[mask])
        assert mask.sum() == part.size  # one coordinate per sliced value: no duplicates
        assert np.count_nonzero(rebuilt[~mask]) == 0


def test_submodel_is_physically_smaller_and_computes_the_kept_units() -> None:
    """The dense submodel equals the full model with every pruned unit switched off."""
    full = _full_arrays()
    spec = submodel_spec(TASK.layers, 0.25, make_mask_policy("random", seed=1), 1, 0)
    widths = spec.widths(TASK.layers)
    assert widths == {"conv1": 4, "conv2": 8, "fc1": 16, "head": 10}
    index = spec.indices(TASK.layers, {k: a.shape for k, a in full.items()})
    sub = TASK.build_model(widths)
    sub.load_state_dict({k: torch.as_tensor(index[k].take(a)) for k, a in full.items()})
    assert sum(p.numel() for p in sub.parameters()) < 0.1 * sum(a.size for a in full.values())

    masked = {k: a.copy() for k, a in full.items()}
    for layer in TASK.layers:  # zero the pruned output units of every prunable layer
        if layer.prunable:
            dropped = np.setdiff1d(np.arange(layer.width), spec.kept[layer.name])
            masked[f"{layer.name}.weight"][dropped] = 0
            masked[f"{layer.name}.bias"][dropped] = 0
    ref = TASK.build_model(TASK.full_widths())
    ref.load_state_dict({k: torch.as_tensor(a) for k, a in masked.items()})

    outputs = {}
    for tag, model in (("sub", sub), ("ref", ref)):
        model.fc1.register_forward_hook(lambda m, i, o, tag=tag: outputs.__setitem__(tag, o))
        model(torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    kept = torch.as_tensor(spec.kept["fc1"])
    torch.testing.assert_close(outputs["sub"], outputs["ref"][:, kept], rtol=1e-5, atol=1e-5)


def test_mask_policies() -> None:
    static, rolling = make_mask_policy("static", 0).choose, make_mask_policy("rolling", 0).choose
    random_a, random_b = make_mask_policy("random", 0).choose, make_mask_policy("random", 1).choose
    np.testing.assert_array_equal(static(0, 16, 4, 5, 2, None), [0, 1, 2, 3])
    np.testing.assert_array_equal(rolling(0, 16, 4, 1, 2, None), [0, 1, 2, 3])
    np.testing.assert_array_equal(rolling(0, 16, 4, 15, 2, None), [0, 1, 14, 15])  # wraps around
    draw = random_a(0, 16, 4, 3, 2, None)
    np.testing.assert_array_equal(draw, random_a(0, 16, 4, 3, 2, None))
    assert not np.array_equal(draw, random_a(0, 16, 4, 4, 2, None))  # per round
    assert not np.array_equal(draw, random_b(0, 16, 4, 3, 2, None))  # per seed
    assert [kept_units(16, r) for r in (1, 0.5, 0.25, 0.125, 0.01)] == [16, 8, 4, 2, 1]
    with pytest.raises(ValueError, match="allowed: static, rolling, random, importance, coverage"):
        make_mask_policy("dropout", 0)
