"""One results directory per run: metrics (JSON + CSV), config, versions, model, plot.

Every file is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .plots import ACCURACY_TARGET, figure, plt


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` all or nothing: into a temporary file beside it, fsync, then rename.

    A crash mid-write leaves the previous file (or none), never a truncated one; the directory is
    fsynced after the rename so the new name survives a power loss. A temporary file left by a
    killed process (SIGKILL skips the cleanup) is removed by the next write of the same file.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2))


def convert_arrays(value: Any, array_type: type) -> Any:
    """numpy arrays <-> tensors inside nested dicts and lists (tensors load with weights_only)."""
    if isinstance(value, Mapping):
        return {k: convert_arrays(v, array_type) for k, v in value.items()}
    if isinstance(value, list):
        return [convert_arrays(v, array_type) for v in value]
    if array_type is torch.Tensor and isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if array_type is np.ndarray and isinstance(value, torch.Tensor):
        return value.numpy()
    return value


def save_model(path: Path, parts: Mapping[str, Mapping[str, Any]], widths: Mapping[str, int],
               config: Mapping[str, Any]) -> None:
    """The global x, y, v with the widths and config that produced them.

    Tensors and plain values only, so ``torch.load(path)`` works with ``weights_only=True``.
    """
    tensors = convert_arrays(parts, torch.Tensor)
    atomic_write(path, lambda handle: torch.save(
        {"parts": tensors, "widths": dict(widths), "config": dict(config)}, handle))


def make_run_dir(root: str, name: str) -> Path:
    base = Path(root).expanduser().resolve() / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def code_version(fab_hash: str = "") -> dict[str, str]:
    """Which code ran: the git commit of this checkout and whether tracked files were modified
    (``dirty``), or, under ``flwr run`` (the app runs from an installed FAB, not a checkout), the
    FAB's hash, which identifies the app's files exactly."""
    root = Path(__file__).resolve().parent.parent
    out = {"fab-hash": fab_hash or "none (not run from a FAB)"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            raise ValueError("the app is not the top of a git checkout")
        out["git-commit"] = git("rev-parse", "HEAD")
        out["git-dirty"] = "yes" if git("status", "--porcelain", "--untracked-files=no") else "no"
    except (OSError, ValueError, subprocess.SubprocessError):
        out["git-commit"] = "none (not a git checkout)"
    return out


def versions(fab_hash: str = "") -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(),
           **code_version(fab_hash)}
    for package in ("flwr", "torch", "numpy", "flwr-datasets", "pydantic", "mlxtend"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def rounds_to_target(rows: Sequence[Mapping[str, Any]], target: float = ACCURACY_TARGET) -> int | None:
    for row in rows:
        if row.get("test-accuracy", 0.0) >= target:
            return int(row["round"])
    return None


CLAIMED_COSTS = ("flops", "flops-per-step", "peak-memory-mb", "train-seconds")
"""What a client measures of its own round: its report, which the server cannot check."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _by_ratio(client_rows: Sequence[Mapping[str, Any]]) -> dict[float, list[Mapping[str, Any]]]:
    groups: dict[float, list[Mapping[str, Any]]] = defaultdict(list)
    for row in client_rows:
        if _finite(row.get("resource-ratio")):  # a plug-in's client may not report one
            groups[float(row["resource-ratio"])].append(row)
    return groups


def _typical(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """A cost of the replies at one ratio: server-measured bytes averaged; a client's own report
    (:data:`CLAIMED_COSTS`) the lower median of the reports, >= 0, so one node's figure moves it
    only when it is the median (when it is alone at its ratio, its figure is the ratio's)."""
    values = sorted(float(r[key]) for r in rows if _finite(r.get(key)))
    if not values:
        return None
    if key not in CLAIMED_COSTS:
        return sum(values) / len(values)
    return max(values[(len(values) - 1) // 2], 0.0)


def client_flops(client_rows: Sequence[Mapping[str, Any]]) -> int:
    """The FLOPs of a round's accepted replies: each counted at its ratio's :func:`_typical`
    reported FLOPs (a reply without a ratio: the lower median of those without one)."""
    groups = _by_ratio(client_rows)
    groups[-1.0] = [r for r in client_rows if not _finite(r.get("resource-ratio"))]
    return int(sum(len(rows) * (_typical(rows, "flops") or 0.0) for rows in groups.values()))


def cost_by_ratio(client_rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Cost per resource ratio (:func:`_typical`), and each ratio's FLOPs/memory relative to ratio 1."""
    keys = ("flops-per-step", "peak-memory-mb", "train-seconds", "bytes-up", "bytes-down")
    summary = {str(ratio): {k: v for k in keys if (v := _typical(rows, k)) is not None}
               for ratio, rows in sorted(_by_ratio(client_rows).items(), reverse=True)}
    full = summary.get("1.0")
    if full:
        for stats in summary.values():
            for key in ("flops-per-step", "peak-memory-mb"):
                if key in stats and full.get(key):
                    stats[f"{key}-vs-ratio-1"] = stats[key] / full[key]
    return summary


def plot(path: Path, rows: Sequence[Mapping[str, Any]], title: str) -> None:
    """:func:`figure` as a PNG, with the whole run name in its metadata (``Title``)."""
    fig = figure(rows, title)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120,
                                                   metadata={"Title": title}))
    plt.close(fig)


def write_results(run_dir: Path, *, rows: Sequence[Mapping[str, Any]],
                  client_rows: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]],
                  title: str, fab_hash: str = "", node_eval_rows: Sequence[Mapping[str, Any]] = ()
                  ) -> dict[str, Any]:
    """Write every file of a finished run but config.json (written when the run starts)."""
    evaluated = [r for r in rows if "federated-eval-accuracy" in r]
    summary = {
        "final-test-accuracy": rows[-1].get("test-accuracy") if rows else None,
        "best-test-accuracy": max((r.get("test-accuracy", 0.0) for r in rows), default=None),
        "rounds-to-90%": rounds_to_target(rows),
        "total-seconds": rows[-1].get("elapsed-seconds") if rows else None,
        "final": {k: v for k, v in (rows[-1] if rows else {}).items()
                  if k.startswith(("test-", "detection-"))},
        "total-bytes": sum(int(r.get("bytes-down", 0)) + int(r.get("bytes-up", 0)) for r in rows),
        "total-client-flops": sum(int(r.get("client-flops", 0)) for r in rows),
        "cost-by-ratio": cost_by_ratio(client_rows),
        "final-node-eval": {k: v for k, v in (evaluated[-1] if evaluated else {}).items()
                            if k.startswith("federated-eval-")},
        "nodes": list(nodes),
    }
    write_json(run_dir / "versions.json", versions(fab_hash))
    write_json(run_dir / "metrics.json", list(rows))
    write_json(run_dir / "summary.json", summary)
    _write_csv(run_dir / "metrics.csv", rows)
    if client_rows:
        _write_csv(run_dir / "clients.csv", client_rows)
    if node_eval_rows:
        _write_csv(run_dir / "node-eval.csv", node_eval_rows)
    plot(run_dir / "plot.png", rows, title)
    return summary
