"""Per-round checkpoints of the server state, and resuming from them.

A checkpoint holds the global x, y, v, the last finished round, the strategy's own state (RABO's
momentum), the metrics rows and the per-client rows so far. No RNG state is needed: every random
choice (sampling, masks, minibatches) is a pure function of (seed, round, client), so a resumed run
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .results import atomic_write, convert_arrays

CHECKPOINT = "checkpoint.pt"
# Keys that may differ between the interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"num-server-rounds", "resume-from", "results-dir", "loggers",
                               "max-idle-rounds"})


class CheckpointError(ValueError):
    """The checkpoint is missing, damaged or belongs to a different configuration."""


def _damaged(run_dir: Path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"resume-from='{run_dir}': {CHECKPOINT} field '{field}' {problem}; it is "
                           "damaged or not a checkpoint of this app: resume from another run directory "
                           "or start a new run")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_fields(run_dir: Path, checkpoint: Checkpoint) -> None:
    """The fields' types, and the rows ending at the checkpoint's round (the run resumes after
    ``rows[-1]``), so that resuming fails here, not after a round of client training."""
    for name, kind in (("config", dict), ("parts", dict), ("strategy_state", dict), ("rows", list),
                       ("client_rows", list)):
        if not isinstance(value := getattr(checkpoint, name), kind):
            raise _damaged(run_dir, name, f"is a {type(value).__name__}, not a {kind.__name__}")
    if isinstance(checkpoint.round, bool) or not isinstance(checkpoint.round, int) or checkpoint.round < 0:
        raise _damaged(run_dir, "round", f"is {checkpoint.round!r}, not a round number")
    if not checkpoint.rows:
        raise _damaged(run_dir, "rows", "is empty (it holds at least round 0's row)")
    for name, rows in (("rows", checkpoint.rows), ("client_rows", checkpoint.client_rows)):
        if not all(isinstance(row, dict) for row in rows):
            raise _damaged(run_dir, name, "holds an entry that is not a row (a dict)")
    last = checkpoint.rows[-1]
    if last.get("round") != checkpoint.round or not _is_number(last.get("elapsed-seconds")):
        raise _damaged(run_dir, "rows", f"ends with round {last.get('round')!r} after "
                       f"{last.get('elapsed-seconds')!r} s, not round {checkpoint.round}")
    if not all(isinstance(tensors, dict) for tensors in checkpoint.parts.values()):
        raise _damaged(run_dir, "parts", "holds a part that is not a dict of tensors")


@dataclass
class Checkpoint:
    round: int
    parts: dict[str, dict[str, Any]]
    strategy_state: dict[str, Any]
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    client_rows: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Written atomically: a crash mid-write leaves the previous round's checkpoint."""
    state = convert_arrays(vars(checkpoint), torch.Tensor)
    atomic_write(run_dir / CHECKPOINT, lambda handle: torch.save(state, handle))


def load_checkpoint(run_dir: Path, config: Mapping[str, Any]) -> Checkpoint:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"resume-from='{run_dir}': no {CHECKPOINT} there")
    try:
        checkpoint = Checkpoint(**convert_arrays(torch.load(path, weights_only=True), np.ndarray))
    except Exception as err:  # noqa: BLE001 - any unreadable file is one message, not a traceback
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise CheckpointError(f"resume-from='{run_dir}': {CHECKPOINT} cannot be read "
                              f"({type(err).__name__}: {first}); "
                              "it is damaged or not a checkpoint of this app: resume from another run "
                              "directory or start a new run") from None
    _check_fields(run_dir, checkpoint)
    changed = sorted(
        k for k in set(config) | set(checkpoint.config)
        if k not in RESUMABLE_CHANGES and config.get(k) != checkpoint.config.get(k)
    )
    if changed:
        details = ", ".join(f"'{k}' = {config.get(k)!r} (checkpoint: {checkpoint.config.get(k)!r})"
                            for k in changed)
        raise CheckpointError(f"resume-from='{run_dir}': the config differs from the checkpoint's: "
                              f"{details}")
    return checkpoint


def check_parts(run_dir: Path, parts: Mapping[str, Mapping[str, Any]],
                model: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """The checkpoint's x, y, v must be the run's model: same keys and shapes, finite values."""
    for part, tensors in model.items():
        saved = parts.get(part, {})
        if set(saved) != set(tensors):
            raise CheckpointError(f"resume-from='{run_dir}': the checkpoint's {part} has parameters "
                                  f"{sorted(saved)}, the model {sorted(tensors)}")
        for name, reference in tensors.items():
            value = np.asarray(saved[name])
            if value.shape != reference.shape:
                raise CheckpointError(f"resume-from='{run_dir}': {part}:{name} has shape {value.shape} "
                                      f"in the checkpoint, {reference.shape} in the model")
            if not np.all(np.isfinite(value)):
                raise CheckpointError(f"resume-from='{run_dir}': {part}:{name} contains NaN or Inf in "
                                      "the checkpoint; resuming would only repeat the failure")


def check_state(run_dir: Path, state: Mapping[str, Any], x: Mapping[str, np.ndarray]) -> None:
    """The built-in strategy's state (``ResourceAdaptiveBilevel.state``): ``velocity``, RABO's
    heavy-ball velocity per x tensor (empty before RABO's first step and for RAFBO), finite and
    of x's shapes; ``agreement-record`` and ``server-agreement-record`` (against the other replies, against
    the server's root-set update), {client key: its node's mean agreement, rounds and fast average}."""
    velocity = state.get("velocity")
    if not isinstance(velocity, dict):
        raise _damaged(run_dir, "strategy_state.velocity", "is missing" if velocity is None else
                       f"is a {type(velocity).__name__}, not a dict of x's tensors")
    for name, value in velocity.items():
        if name not in x:
            raise _damaged(run_dir, "strategy_state.velocity", f"has {name!r}, not a parameter of x "
                           f"({', '.join(sorted(x))})")
        if not isinstance(value, np.ndarray) or value.shape != x[name].shape:
            shape = value.shape if isinstance(value, np.ndarray) else type(value).__name__
            raise _damaged(run_dir, "strategy_state.velocity", f"{name!r} is {shape}, the model's x "
                           f"{x[name].shape}")
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise _damaged(run_dir, "strategy_state.velocity", f"{name!r} is not finite floats")
    for key in ("agreement-record", "server-agreement-record"):
        record = state.get(key, {})
        if not isinstance(record, dict) or not all(
                isinstance(k, int) and isinstance(v, list) and len(v) == 3 and all(_is_number(a) for a in v)
                and -1 <= v[0] <= 1 and v[1] >= 0 and -1 <= v[2] <= 1 for k, v in record.items()):
            raise _damaged(run_dir, f"strategy_state.{key}", f"is {record!r:.80}, not a dict "
                           "{client key: [mean agreement, rounds, fast average]}")
    if not isinstance(rows := state.get("node-eval-rows", []), list) or not all(
            isinstance(row, dict) for row in rows):
        raise _damaged(run_dir, "strategy_state.node-eval-rows", "is not a list of rows")
