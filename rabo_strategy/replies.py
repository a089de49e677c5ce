"""The checks every train reply passes, for the built-in strategy and wrapped plug-ins alike.

Each raises ValueError saying what is wrong; :func:`rabo_strategy.intake.take_replies` (the one loop
that applies a check to a round's replies) counts the reply in ``failed-replies``.
:func:`parse_reply` is the built-in strategy's: a reply's tensors against the slices it was sent,
as a :class:`ParsedReply` (its agreement with the other replies is :mod:`rabo_strategy.screen`'s).
Sizes are checked before any bytes are decoded, and whatever decoding raises becomes a
ValueError, so no reply content can raise past the aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import Array, Message, MetricRecord

from rabo_protocol.wire import ARRAYS, METRICS
from rabo_pruning.aggregation import HeadRows
from rabo_pruning.submodel import SliceIndex
from tasks import LayerSpec

from .claims import accept_metrics
from .lazy import Untrained
from .messages import Sent

__all__ = ["ParsedReply", "class_rows", "decode", "parse_reply"]

HEADER_BYTES = 1024
"""What a .npy header may add to a tensor's data bytes."""


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


@dataclass(frozen=True)
class ParsedReply:
    """A train reply of the built-in strategy that passed :func:`parse_reply`, by name.

    ``values`` (tensors keyed ``part:param``) sit at ``index`` (their slices of the global
    tensors); the agreement screen clips ``values`` in place. :func:`class_rows` narrows both to
    the classifier rows that count and sets ``row_weights``; the lazy-client check sets
    ``untrained``."""

    node: int
    sent: Sent
    """What the node was sent this round (its client key, ratio and slices)."""
    values: dict[str, np.ndarray]
    index: dict[str, SliceIndex]
    metrics: MetricRecord
    row_weights: dict[str, np.ndarray] = field(default_factory=dict)
    """Key -> a weight per classifier row (``head-rows='class-balanced'``; empty: the reply's)."""
    untrained: Untrained = field(default_factory=Untrained)


def parse_reply(msg: Message, sent: Sent, parts: Sequence[str],
                reference: Mapping[str, Mapping[str, np.ndarray]], max_update_norm: float) -> ParsedReply:
    """A reply checked against what was ``sent`` to its node: the ``parts`` it must carry (their
    global tensors in ``reference``, h shaped like x), shapes, dtypes, finite values, each part's
    update (returned minus sent; h itself) within ``max_update_norm``."""
    if msg.has_error():
        raise ValueError(f"client error: {msg.error.reason}")
    content = msg.content
    if ARRAYS not in content.array_records or METRICS not in content.metric_records:
        raise ValueError(f"reply lacks the '{ARRAYS}' or '{METRICS}' record")
    if len(content) != 2:
        raise ValueError(f"reply has records {sorted(content)}, expected only '{ARRAYS}' and '{METRICS}'")
    metrics = content.metric_records[METRICS]
    accept_metrics(metrics, msg.metadata.src_node_id, sent)
    record = content.array_records[ARRAYS]
    values: dict[str, np.ndarray] = {}
    for part in parts:
        full_part = reference[part]
        got = {key.partition(":")[2] for key in record if key.partition(":")[0] == part}
        if got != full_part.keys():
            raise ValueError(f"part '{part}' has keys {sorted(got)}, expected {sorted(full_part)}")
        squared_norm = 0.0
        for name, full in full_part.items():
            key = f"{part}:{name}"
            value = decode(key, record[key], sent.index[name].shape(full.shape), full.dtype)
            update = value if part == "h" else value - sent.index[name].take(full)
            squared_norm += float(np.sum(np.square(update, dtype=np.float64)))
            values[key] = value
        if not np.sqrt(squared_norm) <= max_update_norm:
            raise ValueError(f"update norm of part '{part}' is {np.sqrt(squared_norm):.3g}, "
                             f"above max-update-norm={max_update_norm:g}")
    if unknown := [k for k in record if k.partition(":")[0] not in parts]:
        raise ValueError(f"unexpected arrays {sorted(unknown)[:4]}")
    index = {key: sent.index[key.split(":", 1)[1]] for key in values}
    return ParsedReply(msg.metadata.src_node_id, sent, values, index, metrics)


def class_rows(reply: ParsedReply, classifier: LayerSpec, rule: HeadRows) -> ParsedReply:
    """``reply`` with only the classifier rows of y and v that count, and their weights, under
    ``head-rows=rule``.

    ``class-counts`` in the reply's ``metrics`` is what it claims as its train samples per class: a
    list of one non-negative integer per class summing to its ``num-examples`` (which the server bounds by
    the train size the node declared at query). ``covered``: every row, no per-row weight (counts not
    needed). ``holders``: only the rows of the classes with samples, weighted like the rest of the
    reply (num-examples). ``class-balanced``: the same rows, row c weighted by its count (so a client
    can put at most its num-examples on one row). A reply without counts (a client that does not
    report them) counts as holding every class, num-examples / C each. The rows and weights are
    the returned reply's ``values``, ``index`` and ``row_weights``.
    """
    if rule == "covered" or classifier.prunable:
        return reply
    metrics = reply.metrics
    counts, num_examples = metrics.get("class-counts"), float(metrics["num-examples"])  # type: ignore[arg-type]
    if counts is None:
        per_class = np.full(classifier.width, num_examples / classifier.width)
    elif (not isinstance(counts, list) or len(counts) != classifier.width
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
            or sum(counts) != num_examples):
        raise ValueError(f"class-counts={str(counts)[:80]} is not {classifier.width} non-negative integers "
                         f"summing to num-examples={num_examples:g} (head-rows={rule} needs them)")
    else:
        per_class = np.asarray(counts, dtype=np.float64)
    rows = np.flatnonzero(per_class > 0)
    weights = per_class[rows] if rule == "class-balanced" else None
    values, index, row_weights = dict(reply.values), dict(reply.index), {}
    for key in list(values):
        part, name = key.split(":", 1)
        if part in ("y", "v") and name in (f"{classifier.name}.weight", f"{classifier.name}.bias"):
            full = index[key]
            values[key] = values[key][rows]
            index[key] = SliceIndex(full.out[rows], full.inp)
            if weights is not None:
                row_weights[key] = weights
    return replace(reply, values=values, index=index, row_weights=row_weights)
