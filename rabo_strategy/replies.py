"""The checks every train reply passes, for the built-in strategy and wrapped plug-ins alike.

Each raises ValueError saying what is wrong; the caller counts the reply in ``failed-replies``.
Sizes are checked before any bytes are decoded, and whatever decoding raises becomes a
ValueError, so no reply content can raise past the aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array

HEADER_BYTES = 1024
"""What a .npy header may add to a tensor's data bytes."""


def check_examples(metrics: Mapping[str, object], declared: int = -1) -> float:
    """A reply's ``num-examples``: a finite positive number, at most the ``declared`` train size
    of the node (what its profile reported at query time; -1: not declared, not bounded)."""
    examples = metrics.get("num-examples")
    if (isinstance(examples, bool) or not isinstance(examples, (int, float))
            or not math.isfinite(examples) or examples <= 0):
        raise ValueError(f"num-examples={examples!r} is not a positive finite number")
    if declared > 0 and examples > declared:
        raise ValueError(f"num-examples={examples:g} is above the {declared} train examples the node "
                         "declared at query time")
    return float(examples)


def decode(key: str, array: Array, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``array`` as numpy, if it declares ``shape``, carries at most that many ``dtype`` bytes,
    decodes, has exactly that shape and dtype, and is finite."""
    limit = np.dtype(dtype).itemsize * math.prod(shape) + HEADER_BYTES
    if tuple(array.shape) != tuple(shape) or len(array.data) > limit:
        raise ValueError(f"{key} declares shape {list(array.shape)} and {len(array.data)} bytes, "
                         f"expected {list(shape)} (at most {limit} bytes)")
    try:
        value = array.numpy()
    except Exception as err:  # noqa: BLE001 - EOFError, BadZipFile, pickle refusals, ...
        raise ValueError(f"{key} cannot be decoded ({type(err).__name__}: {err})") from None
    if value.shape != tuple(shape) or value.dtype != dtype:
        raise ValueError(f"{key} is {value.dtype}{list(value.shape)}, expected "
                         f"{np.dtype(dtype)}{list(shape)}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{key} contains NaN or Inf")
    return value
