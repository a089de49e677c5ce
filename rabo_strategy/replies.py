"""The checks every train reply passes, for the built-in strategy and wrapped plug-ins alike.

Each raises ValueError saying what is wrong; the caller counts the reply in ``failed-replies``.
:func:`parse_reply` and :class:`RmsBound` are the built-in strategy's: a reply's tensors against
the slices it was sent, and its update size against its peers at the same ratio.
Sizes are checked before any bytes are decoded, and whatever decoding raises becomes a
ValueError, so no reply content can raise past the aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, Message, MetricRecord

from rabo_protocol.wire import ARRAYS, METRICS
from rabo_pruning.aggregation import HeadRows
from rabo_pruning.submodel import SliceIndex
from tasks import LayerSpec

from .messages import Sent

HEADER_BYTES = 1024
"""What a .npy header may add to a tensor's data bytes."""


def check_examples(metrics: Mapping[str, object], declared: int | None = None) -> float:
    """A reply's ``num-examples``: a finite positive number, at most the ``declared`` train size
    of the node (what its profile reported at query time; None: not declared, not bounded)."""
    examples = metrics.get("num-examples")
    if (isinstance(examples, bool) or not isinstance(examples, (int, float))
            or not math.isfinite(examples) or examples <= 0):
        raise ValueError(f"num-examples={examples!r} is not a positive finite number")
    if declared is not None and examples > declared:
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


Parsed = tuple[dict[str, np.ndarray], dict[str, SliceIndex], MetricRecord, float]
"""A valid reply: its tensors keyed ``part:param``, their slices, its metrics, its update RMS."""


def parse_reply(msg: Message, sent: Sent | None, parts: Sequence[str],
                reference: Mapping[str, Mapping[str, np.ndarray]], max_update_norm: float) -> Parsed:
    """A reply checked against what was ``sent``: the ``parts`` it must carry (their global
    tensors in ``reference``, h shaped like x), shapes, dtypes, finite values, each part's update
    (returned minus sent; h itself) within ``max_update_norm``; the largest per-coordinate RMS of
    its parts' updates."""
    if msg.has_error():
        raise ValueError(f"client error: {msg.error.reason}")
    if sent is None:
        raise ValueError("not sampled this round")
    content = msg.content
    if ARRAYS not in content.array_records or METRICS not in content.metric_records:
        raise ValueError(f"reply lacks the '{ARRAYS}' or '{METRICS}' record")
    if len(content) != 2:
        raise ValueError(f"reply has records {sorted(content)}, expected only '{ARRAYS}' and '{METRICS}'")
    metrics = content.metric_records[METRICS]
    check_examples(metrics, sent.num_examples)
    record = content.array_records[ARRAYS]
    values: dict[str, np.ndarray] = {}
    rms = 0.0
    for part in parts:
        full_part = reference[part]
        got = {key.partition(":")[2] for key in record if key.partition(":")[0] == part}
        if got != full_part.keys():
            raise ValueError(f"part '{part}' has keys {sorted(got)}, expected {sorted(full_part)}")
        squared_norm, size = 0.0, 0
        for name, full in full_part.items():
            key = f"{part}:{name}"
            value = decode(key, record[key], sent.index[name].shape(full.shape), full.dtype)
            update = value if part == "h" else value - sent.index[name].take(full)
            squared_norm += float(np.sum(np.square(update, dtype=np.float64)))
            values[key], size = value, size + value.size
        if not np.sqrt(squared_norm) <= max_update_norm:
            raise ValueError(f"update norm of part '{part}' is {np.sqrt(squared_norm):.3g}, "
                             f"above max-update-norm={max_update_norm:g}")
        rms = max(rms, float(np.sqrt(squared_norm / max(size, 1))))
    if unknown := [k for k in record if k.partition(":")[0] not in parts]:
        raise ValueError(f"unexpected arrays {sorted(unknown)[:4]}")
    index = {key: sent.index[key.split(":", 1)[1]] for key in values}
    return values, index, metrics, rms


def class_rows(values: dict[str, np.ndarray], index: dict[str, SliceIndex], metrics: MetricRecord,
               classifier: LayerSpec, rule: HeadRows
               ) -> tuple[dict[str, np.ndarray], dict[str, SliceIndex], dict[str, np.ndarray]]:
    """The classifier rows of y and v that count, and their weights, under ``head-rows=rule``.

    ``class-counts`` in the reply's ``metrics`` is what it claims as its train samples per class: a
    list of one non-negative integer per class summing to its ``num-examples`` (which the server bounds by
    the train size the node declared at query). ``covered``: every row, no per-row weight (counts not
    needed). ``holders``: only the rows of the classes with samples, weighted like the rest of the
    reply (num-examples). ``class-balanced``: the same rows, row c weighted by its count (so a client
    can put at most its num-examples on one row). A reply without counts (a client that does not
    report them) counts as holding every class, num-examples / C each. Returns (values, index,
    row weights by key).
    """
    if rule == "covered" or classifier.prunable:
        return values, index, {}
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
    values, index, row_weights = dict(values), dict(index), {}
    for key in list(values):
        part, name = key.split(":", 1)
        if part in ("y", "v") and name in (f"{classifier.name}.weight", f"{classifier.name}.bias"):
            full = index[key]
            values[key] = values[key][rows]
            index[key] = SliceIndex(full.out[rows], full.inp)
            if weights is not None:
                row_weights[key] = weights
    return values, index, row_weights


@dataclass
class RmsBound:
    """Rejects a reply whose update RMS (per coordinate) exceeds ``ratio`` times a reference: the
    median RMS of the replies at its resource ratio, this round's and the last ``history``
    accepted ones (smaller submodels take larger steps per coordinate). 0 turns it off."""

    ratio: float = 0.0
    history: int = 8
    accepted: dict[float, list[float]] = field(default_factory=dict)
    """Resource ratio -> the last accepted RMS values (checkpointed with the strategy)."""

    def reference(self, ratio: float, round_rms: Sequence[tuple[float, float]]) -> tuple[float, str]:
        """The RMS a reply at ``ratio`` is compared with, and what it is taken from: the median of
        the pool (this round's and the remembered replies at ``ratio``) when it has at least 3;
        with 2, the smaller of them, or the round's median if larger (a 10x reply does not raise
        the reference of its one peer); with 1, the round's median."""
        pool = [rms for r, rms in round_rms if r == ratio] + self.accepted.get(ratio, [])
        everyone = float(np.median([rms for _, rms in round_rms]))
        if len(pool) >= 3:
            return float(np.median(pool)), f"{len(pool)} replies at ratio {ratio:g}"
        if len(pool) == 2:
            return max(min(pool), everyone), f"2 replies at ratio {ratio:g} and this round's"
        return everyone, "this round's replies"

    def filter(self, replies: Sequence[tuple[float, float]]) -> dict[int, str]:
        """(resource ratio, RMS) of each parsed reply -> {position: why rejected}; remembers the
        accepted ones."""
        if self.ratio <= 0 or not replies:
            return {}
        rejected, live = {}, list(range(len(replies)))
        for i, (ratio, rms) in enumerate(replies):  # a rejected reply leaves the later ones' reference
            reference, pool = self.reference(ratio, [replies[j] for j in live])
            if not rms <= self.ratio * reference:
                rejected[i] = (f"update RMS {rms:.3g} above max-update-norm-ratio={self.ratio:g} x the "
                               f"median {reference:.3g} of {pool}")
                live.remove(i)
        for i, (ratio, rms) in enumerate(replies):
            if i not in rejected:
                kept = self.accepted.setdefault(ratio, [])
                kept[:] = [*kept, rms][-self.history:]
        return rejected
