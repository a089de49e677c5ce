"""Per-coordinate views of the replies' updates, and their medians with each reply left out of its
own reference.

The rows of a stack are replies, the columns the coordinates of one part of the model; NaN marks a
coordinate a reply did not cover. Every function here is exact (no interpolation) and vectorised
over the columns, one sort per call.

Example:
    >>> import numpy as np
    >>> stack = np.array([[1.0, np.nan], [2.0, 5.0], [4.0, 7.0], [-9.0, 6.0]])
    >>> leave_one_out(stack, np.ones(4, dtype=bool))[:, 0].tolist()
    [2.0, 1.0, 1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rabo_pruning.submodel import SliceIndex

__all__ = ["SAMPLE", "Sliced", "cosine", "leave_group_out", "leave_one_out", "relative_sizes",
           "sample_positions", "stack_part", "typical_size", "unstack_row", "updates_of"]


@dataclass(frozen=True)
class Sliced:
    """One reply's updates keyed ``part:param`` and the slices of the global tensors they sit at."""

    updates: Mapping[str, np.ndarray]
    index: Mapping[str, SliceIndex]


def _middle(ordered: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    n = len(ordered)
    pick = [np.clip(i, 0, n - 1) for i in (low, high)]
    return (np.take_along_axis(ordered, pick[0], axis=0) + np.take_along_axis(ordered, pick[1], axis=0)) / 2


def leave_one_out(stack: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Row i, per column: the median of the values of the rows in the set ``inside`` (a boolean per
    row) other than row i itself; NaN where no such value exists or row i is NaN."""
    members = np.where(inside[:, None], stack, np.nan)
    order = np.argsort(members, axis=0, kind="stable")  # NaN (not covered, not a member) sorts last
    ordered = np.take_along_axis(members, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(len(stack)).reshape(-1, 1), axis=0)
    count = (~np.isnan(members)).sum(axis=0, keepdims=True)
    # a member leaves its own position out of the middle it picks; a non-member sees all members
    own = inside[:, None] & ~np.isnan(stack)
    others = count - own
    low, high = (others - 1) // 2, others // 2
    skip_low = np.where(own & (low >= rank), low + 1, low)
    skip_high = np.where(own & (high >= rank), high + 1, high)
    value = _middle(ordered, skip_low, skip_high)
    return np.where((others >= 1) & ~np.isnan(stack), value, np.nan)


def typical_size(stack: np.ndarray, inside: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Row i, per column: the smaller of two leave-one-out medians of the absolute values, over the
    rows in ``inside`` and over those of them at ``ratios[i]`` (a ratio group can lower its members'
    size bound, never raise it above the others')."""
    magnitude = np.abs(stack)
    everyone = leave_one_out(magnitude, inside)
    out = everyone.copy()
    for ratio in set(ratios):
        group = np.array([r == ratio for r in ratios])
        if (group & inside).sum() > 1:
            same = leave_one_out(magnitude, group & inside)
            mine, all_others = same[group], everyone[group]
            out[group] = np.where(np.isnan(mine), all_others, np.fmin(mine, all_others))
    return out


def leave_group_out(stack: np.ndarray, ratios: Sequence[float],
                    inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row i, per column: the median of the rows in ``inside`` (a boolean per row) at other ratios
    than ``ratios[i]`` (a group of colluders at one ratio never sits in its own reference; NaN where
    none covers the column), and how many of them cover it."""
    out, count = np.full(stack.shape, np.nan), np.zeros(stack.shape, dtype=np.int64)
    covered = ~np.isnan(stack)
    for ratio in set(ratios):
        group = np.array([r == ratio for r in ratios])
        if (~group & inside).any():
            out[group] = leave_one_out(stack, ~group & inside)[group]
            count[group] = covered[~group & inside].sum(axis=0)
    return out, count


def updates_of(values: Mapping[str, np.ndarray], index: Mapping[str, SliceIndex],
               reference: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A reply's updates: ``values`` minus the sent slice of ``reference`` (h: itself)."""
    out = {}
    for key, value in values.items():
        part, name = key.split(":", 1)
        base = 0.0 if part == "h" else index[key].take(reference[part][name])
        out[key] = value.astype(np.float64) - base
    return out


def unstack_row(row: np.ndarray, reply: Sliced, part: str, full: Mapping[str, np.ndarray],
             out: dict[str, np.ndarray]) -> None:
    """The flattened full-coordinate ``row`` back into ``reply``'s slices of ``part``."""
    updates, index = reply.updates, reply.index
    start = 0
    for name, tensor in full.items():
        key, stop = f"{part}:{name}", start + tensor.size
        if key in updates:
            out[key] = index[key].take(row[start:stop].reshape(tensor.shape))
        start = stop

def _at(update: np.ndarray | None, index: SliceIndex | None, shape: tuple[int, ...],
        flat: np.ndarray) -> np.ndarray:
    """The values of a full tensor of ``shape`` at the ``flat`` positions, holding ``update`` at
    ``index`` and NaN elsewhere, without building the full tensor."""
    out = np.full(len(flat), np.nan)
    if update is None or index is None:
        return out
    where = np.unravel_index(flat, shape)
    local, hit = [], np.ones(len(flat), dtype=bool)
    for axis, size in enumerate(shape):
        kept = index.dims[axis] if axis < len(index.dims) else None
        if kept is None:
            local.append(where[axis])
            continue
        inverse = np.full(size, -1, dtype=np.int64)
        inverse[kept] = np.arange(len(kept))
        position = inverse[where[axis]]
        hit &= position >= 0
        local.append(position)
    out[hit] = update[tuple(axis[hit] for axis in local)]
    return out


def stack_part(replies: Sequence[Sliced], part: str, full: Mapping[str, np.ndarray],
               min_replies: int, positions: np.ndarray | None = None) -> np.ndarray | None:
    """The replies' updates of ``part`` as rows over its flattened full coordinates, or over the
    sorted flat ``positions`` of them only (NaN where a reply did not cover one); None when
    ``min_replies`` or fewer replies carry it. One tensor is held at full size at a time."""
    rows = []
    for reply in replies:
        updates, index = reply.updates, reply.index
        pieces, start = [], 0
        for name, tensor in full.items():
            key, stop = f"{part}:{name}", start + tensor.size
            if positions is not None:
                chosen = positions[(positions >= start) & (positions < stop)] - start
                pieces.append(_at(updates.get(key), index.get(key), tensor.shape, chosen))
            else:
                value = np.full(tensor.shape, np.nan)
                if key in updates:
                    covered = np.zeros(tensor.shape)
                    index[key].add_into(covered, np.ones(updates[key].shape))
                    filled = np.zeros(tensor.shape)
                    index[key].add_into(filled, updates[key])
                    value = np.where(covered > 0, filled, np.nan)
                pieces.append(value.ravel())
            start = stop
        rows.append(np.concatenate(pieces) if pieces else np.zeros(0))
    carrying = sum(1 for reply in replies if any(k.split(":", 1)[0] == part for k in reply.updates))
    return np.stack(rows) if carrying > min_replies else None


SAMPLE = 65_536
"""Coordinates per part the direction and size are measured on (a cosine over that many is within
about 1/256 of the whole part's)."""


def sample_positions(full: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Evenly spaced flat positions of at most :data:`SAMPLE` of a part's coordinates (None: all):
    the screen's cosines and sizes are estimated there, so its cost stays bounded for any network."""
    total = sum(t.size for t in full.values())
    return np.linspace(0, total - 1, SAMPLE).astype(np.int64) if total > SAMPLE else None


def cosine(row: np.ndarray, toward: np.ndarray, mask: np.ndarray) -> float | None:
    """The cosine of ``row`` and ``toward`` on ``mask`` (None: no coordinate there)."""
    if not mask.any():
        return None
    own, ref = row[mask], toward[mask]
    scale = float(np.linalg.norm(own) * np.linalg.norm(ref))
    return float(own @ ref) / (scale or 1.0)


def relative_sizes(size: Sequence[Mapping[str, float]], ratios: Sequence[float],
                   accepted: np.ndarray) -> list[dict[str, float]]:
    """Each reply's size per part over the median size of the other accepted replies at its ratio
    (a reply is never in its own reference; a reply alone at its ratio gets none)."""
    out: list[dict[str, float]] = []
    for i, own in enumerate(size):
        out.append({})
        for part, value in own.items():
            peers = [other[part] for j, other in enumerate(size)
                     if j != i and accepted[j] and ratios[j] == ratios[i] and part in other]
            if peers:
                out[i][part] = value / (float(np.median(peers)) or 1e-300)
    return out
