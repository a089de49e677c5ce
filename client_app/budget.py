"""A node's ratio from its memory budget: profile one local round at candidate ratios.

``memory-mb`` budgets the tensor memory of one local round (activations, gradients and
temporaries, as :mod:`client_app.profiling` measures it); ``resource-ratio=auto`` uses the memory
the device has available now (free CUDA memory, or available RAM) as the budget.
"""

from __future__ import annotations

import psutil
import torch

from rabo_protocol import RunConfig
from rabo_pruning.masks import submodel_spec
from tasks import BilevelTask, ClientData

from .local import local_round, resolve_device

CANDIDATE_RATIOS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def probe_round(task: BilevelTask, data: ClientData, cfg: RunConfig, ratio: float, *, profile: bool = False,
                profile_memory: bool = False, one_outer_step: bool = False) -> dict[str, float | list[int]]:
    """The metrics of a probe local round at ``ratio``, on the server's own submodel rule, so the
    probe matches the real submodel: one step of each kind, or (``one_outer_step``) the run's
    inner and v steps for one outer step."""
    steps = {"outer_steps": 1} if one_outer_step else {"inner_steps": 1, "v_steps": 1, "outer_steps": 1}
    probe = cfg.model_copy(update={**steps, "profile": profile, "profile_memory": profile_memory})
    widths = submodel_spec(task.structure, ratio).widths(task.structure)
    x, y = task.init_params(widths, len(data.train))
    parts = {"x": x, "y": y, "v": {k: torch.ones_like(t) for k, t in y.items()}}
    numpy_parts = {p: {k: t.numpy() for k, t in d.items()} for p, d in parts.items()}
    _, metrics = local_round(task, data, probe, widths, numpy_parts, server_round=0, partition_id=0)
    return metrics


def peak_memory_bytes(task: BilevelTask, data: ClientData, cfg: RunConfig, ratio: float) -> int:
    """Measured peak tensor memory of one local round (one step of each kind) at ``ratio``."""
    metrics = probe_round(task, data, cfg, ratio, profile=True, profile_memory=True)
    return int(metrics["peak-memory-mb"] * 2**20)  # type: ignore[operator]


def available_memory_bytes(cfg: RunConfig) -> int:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    # available, not free: the page cache the kernel gives back counts (sysconf's AVPHYS_PAGES
    # said 12 GB where 20.5 GB were available, and it does not exist on macOS)
    return int(psutil.virtual_memory().available)


def fit_ratio(task: BilevelTask, data: ClientData, cfg: RunConfig,
              budget_bytes: int) -> tuple[float, int]:
    """The largest candidate ratio whose measured peak fits ``budget_bytes``, and that peak."""
    peak = 0
    for ratio in CANDIDATE_RATIOS:
        peak = peak_memory_bytes(task, data, cfg, ratio)
        if peak <= budget_bytes:
            return ratio, peak
    raise ValueError(f"no ratio fits the memory budget of {budget_bytes / 2**20:.1f} MB: ratio "
                     f"{CANDIDATE_RATIOS[-1]} needs {peak / 2**20:.1f} MB")
