"""A client's label prior in its losses: restricted softmax (FedRS) and logit adjustment (FedLC).

Under label skew a client holds a few classes. Plain cross-entropy on its data pushes down the
logits of every class it lacks; the masked cross-entropy (HeteroFL, FedRolex) removes those classes
from the softmax, so that no client ever compares a class of its own with one it lacks. Both are end
points of one family: the softmax of the client's losses weights class c by s_c,

    p(c | z) = s_c exp(z_c) / sum_k s_k exp(z_k),   i.e.   loss = CE(z + b, label),  b_c = log s_c,

with, for a client holding n_c samples of class c out of n (``counts``) and C classes,

    s_c = (n_c / n) ** tau          held classes (n_c > 0): logit adjustment, tau = ``logit-adjustment``
    s_c = alpha * (1 / C) ** tau    absent classes: restricted softmax, alpha = ``absent-class-weight``

- tau = 0, alpha = 1: plain cross-entropy; tau = 0, alpha = 0: the masked cross-entropy (b = -inf on
  the absent classes, which then get no gradient); tau = 0, 0 < alpha < 1: FedRS's restricted softmax
  (Li & Zhan 2021) in its softmax-weight form (FedRS scales the absent classes' logits themselves, so
  its alpha = 0 leaves them at logit 0 instead of removing them; the weight form has both end points
  exact).
- tau = 1: balanced softmax / logit adjustment by the client's label prior (Ren et al. 2020, Menon et
  al. 2021; FedLC, Zhang et al. 2022, calibrates by n_c ** (-1/4) in the same place): the client's
  frequent classes lose the head start its prior gives them, so the global head learns p(x | c)
  rather than the client's p(c | x). An absent class is weighted as if it had the uniform prior 1/C,
  times alpha.

The offsets are used in training only (inner and outer losses); evaluation is plain argmax.

>>> counts = torch.tensor([3, 1, 0])
>>> logit_offsets(counts, absent_weight=0.0, adjustment=0.0)[2] == MASKED
tensor(True)
>>> logit_offsets(counts, absent_weight=1.0, adjustment=0.0) is None
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MASKED", "class_counts", "logit_offsets"]

MASKED = -1e9
"""The offset of a class with weight 0: exp underflows to exactly 0 in float32 and float64, so the
class leaves the softmax and its logit gets no gradient (as masking it would), without the NaN that
-inf times 0 gives in a backward pass."""


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """The number of samples of each class in ``labels``, shape (num_classes,), int64."""
    return torch.bincount(labels.long().flatten(), minlength=num_classes)[:num_classes]


def logit_offsets(counts: Tensor, absent_weight: float, adjustment: float) -> Tensor | None:
    """b = log s (float32, shape of ``counts``) for the client with label ``counts``; None when
    b = 0 (plain cross-entropy: alpha = 1 and tau = 0)."""
    if not 0.0 <= absent_weight <= 1.0 or adjustment < 0.0:
        raise ValueError(f"absent-class-weight={absent_weight} must lie in [0, 1] and "
                         f"logit-adjustment={adjustment} be >= 0")
    if absent_weight == 1.0 and adjustment == 0.0:
        return None
    counts = counts.double()
    held = counts > 0
    prior = counts / counts.sum().clamp_min(1.0)
    held_offset = adjustment * torch.log(torch.where(held, prior, torch.ones_like(prior)))
    absent_offset = (math.log(absent_weight) - adjustment * math.log(len(counts))
                     if absent_weight > 0 else MASKED)
    return torch.where(held, held_offset, torch.full_like(prior, absent_offset)).float()
