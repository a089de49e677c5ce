"""Types shared by the oracles and the solver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

Params = dict[str, Tensor]
LossFn = Callable[[Params, Params, Any], Tensor]
"""A scalar loss of (x, y, batch)."""
