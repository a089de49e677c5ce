"""Per-round checkpoints of the server state, and resuming from them.

A checkpoint holds the global x, y, v, the last finished round, the strategy's own state (RABO's
momentum), the metrics rows and the per-client rows so far. No RNG state is needed: every random
choice (sampling, masks, minibatches) is a pure function of (seed, round, client), so a resumed run
repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .results import atomic_write, convert_arrays

CHECKPOINT = "checkpoint.pt"
# Keys that may differ between the interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"num-server-rounds", "resume-from", "results-dir", "loggers"})


class CheckpointError(ValueError):
    """The checkpoint is missing or belongs to a different configuration."""


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
        int(checkpoint.round)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one message, not a traceback
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise CheckpointError(f"resume-from='{run_dir}': {CHECKPOINT} cannot be read "
                              f"({type(err).__name__}: {first}); "
                              "it is damaged or not a checkpoint of this app: resume from another run "
                              "directory or start a new run") from None
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
