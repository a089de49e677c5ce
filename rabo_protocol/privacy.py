"""Differential privacy for sliced updates: the keys, and the clip and noise both apps apply.

Distributed Gaussian noise on submodels. Each client clips its update u (what it replies minus
what it was sent, over every part its reply carries: x or h, y, v, on its own slice) to L2 norm
C = ``dp-clip``, and adds to coordinate j Gaussian noise of standard deviation

    sigma * C / sqrt(c_j),

c_j = the number of clients the server planned to cover j this round (it knows every mask before
sending and sends each client its slice of the counts, the ``dp-coverage`` record). The sum over
the c_j clients covering j then carries noise N(0, sigma^2 C^2) at every coordinate, whatever the
coverage, so the vector of per-coordinate sums is a Gaussian mechanism with L2 sensitivity C
(one client's clipped update, wherever it sits) and noise multiplier sigma; dividing coordinate j
by c_j (public: the masks depend on budgets and the seed, not on data) is post-processing. A
client whose reply is missing or refused counts as a zero update whose noise share the server adds
itself (:func:`clip_and_noise` on zeros), so the released sum always carries the full noise.

Why per coordinate: noise calibrated to the full model (std sigma C / sqrt(W) for W clients on
every coordinate) would leave a coordinate covered by c_j < W clients with sigma C sqrt(c_j / W)
in its sum, less than its sensitivity needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field, model_validator

COVERAGE = "dp-coverage"
"""The train message's record of per-coordinate planned coverage c_j, keyed ``x:<param>`` and
``y:<param>`` (v and h share y's and x's), each the client's slice."""
NOISE_KEY = "dp-noise-multiplier"
"""The train config's sigma (the server calibrates it; the client only applies it)."""


class PrivacyKeys(BaseModel):
    """``dp-clip`` C (0: off, the default), the privacy target ``dp-epsilon`` at ``dp-delta`` over
    ``num-server-rounds`` rounds, from which the server calibrates sigma (``dp-noise-multiplier``
    0), or sigma itself."""

    dp_clip: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    dp_epsilon: Annotated[float, Field(gt=0, le=1e6)] = 8.0
    dp_delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    dp_noise_multiplier: Annotated[float, Field(ge=0, le=1e6)] = 0.0

    @model_validator(mode="after")
    def _check_privacy(self) -> PrivacyKeys:
        """The release is a noisy *sum* with weight 1 per client: a rule that is not a mean, a
        per-class row weight (a client's label histogram, sent in the clear) or a plug-in strategy
        (it does not know the coverage) would break the sensitivity argument."""
        if self.dp_clip == 0:
            return self
        others = {"aggregation": ("mean",), "head-rows": ("covered",)}
        for key, allowed in others.items():
            if (value := getattr(self, key.replace("-", "_"), allowed[0])) not in allowed:
                raise ValueError(f"dp-clip={self.dp_clip:g} adds noise to a per-coordinate sum: it "
                                 f"needs {key}={allowed[0]!r} (not {value!r})")
        if ":" in (strategy := str(getattr(self, "strategy", ""))):
            raise ValueError(f"dp-clip={self.dp_clip:g} is for the built-in strategies (the plug-in "
                             f"'{strategy}' sends no coverage); use Flower's LocalDpMod "
                             "with algorithm='rafbo' (docs/robustness.md, 'Differential privacy')")
        return self


def noise_std(sigma: float, clip: float, counts: np.ndarray) -> np.ndarray:
    """sigma C / sqrt(c_j) per coordinate (0 where no client was planned: nobody's data there)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.divide(sigma * clip, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)


def coverage_key(key: str) -> str:
    """The coverage record's key for a reply key: x and h share x's counts, y and v share y's."""
    part, name = key.split(":", 1)
    return f"{'x' if part in ('x', 'h') else 'y'}:{name}"


def clip_and_noise(updates: Mapping[str, np.ndarray], counts: Mapping[str, np.ndarray], clip: float,
                   sigma: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``updates`` (keyed ``part:param``, a client's slices) scaled by min(1, C / ||u||), ||u|| over
    all of them together, plus N(0, :func:`noise_std`^2) per coordinate (``counts`` by
    :func:`coverage_key`). In float64; drawn in sorted key order, so the same ``rng`` gives the
    same noise."""
    out = {k: np.asarray(u, dtype=np.float64) for k, u in updates.items()}
    norm = float(np.sqrt(sum(float(np.sum(np.square(u))) for u in out.values())))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    for key in sorted(out):
        std = noise_std(sigma, clip, counts[coverage_key(key)])
        out[key] = out[key] * scale + rng.standard_normal(out[key].shape) * std
    return out
