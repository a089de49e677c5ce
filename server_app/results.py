"""One results directory per run: metrics (JSON + CSV), config, versions, model, plot.

Every file is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ACCURACY_TARGET = 0.9


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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
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


def cost_by_ratio(client_rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean cost per resource ratio, and each ratio's FLOPs/memory relative to ratio 1."""
    keys = ("flops-per-step", "peak-memory-mb", "train-seconds", "bytes-up", "bytes-down")
    groups: dict[float, list[Mapping[str, Any]]] = defaultdict(list)
    for row in client_rows:
        if "resource-ratio" in row:  # a plug-in's client may not report one
            groups[float(row["resource-ratio"])].append(row)
    summary = {
        str(ratio): {k: sum(float(r[k]) for r in rows if k in r) / max(sum(k in r for r in rows), 1)
                     for k in keys if any(k in r for r in rows)}
        for ratio, rows in sorted(groups.items(), reverse=True)
    }
    full = summary.get("1.0")
    if full:
        for stats in summary.values():
            for key in ("flops-per-step", "peak-memory-mb"):
                if key in stats and full.get(key):
                    stats[f"{key}-vs-ratio-1"] = stats[key] / full[key]
    return summary


def plot(path: Path, rows: Sequence[Mapping[str, Any]], title: str) -> None:
    rounds = [r["round"] for r in rows]
    fig, (ax_acc, ax_cov) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_acc.plot(rounds, [r.get("test-accuracy", float("nan")) for r in rows], marker=".")
    ax_acc.axhline(ACCURACY_TARGET, color="grey", linestyle=":", linewidth=1)
    ax_acc.set(xlabel="round", ylabel="test accuracy", title=title)
    train_rows = [r for r in rows if "coverage-x-min" in r]
    for key, label, style in (("coverage-x-min", "C_x*", "-"), ("coverage-y-min", "C_y*", "--")):
        ax_cov.plot([r["round"] for r in train_rows], [r[key] for r in train_rows], style,
                    marker=".", label=label)
    top = max((r.get("replies", 0) + r.get("failed-replies", 0) for r in train_rows), default=1)
    ax_cov.set_ylim(0, top + 0.5)
    ax_cov.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_cov.set(xlabel="round", ylabel="min clients covering a coordinate", title="coverage")
    ax_cov.legend()
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def write_results(run_dir: Path, *, rows: Sequence[Mapping[str, Any]],
                  client_rows: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]],
                  title: str) -> dict[str, Any]:
    """Write every file of a finished run but config.json (written when the run starts)."""
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
        "nodes": list(nodes),
    }
    write_json(run_dir / "versions.json", versions())
    write_json(run_dir / "metrics.json", list(rows))
    write_json(run_dir / "summary.json", summary)
    _write_csv(run_dir / "metrics.csv", rows)
    if client_rows:
        _write_csv(run_dir / "clients.csv", client_rows)
    plot(run_dir / "plot.png", rows, title)
    return summary
