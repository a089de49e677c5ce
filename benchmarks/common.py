"""Shared by the benchmark scripts: in-process runs of the real app, tables, CSV, plots, versions.

Runs use :class:`server_app.inprocess.InProcessGrid`: the real ServerApp logic, Strategy and
ClientApp, without Ray or a SuperLink, so every run of a benchmark happens in one process and
ratios between runs are measured under the same conditions. Tables and figures go to ``--out``
(default ``docs/results``, the folder docs/results.md links to); the caches of finished runs to
``benchmarks/results/cache`` (git-ignored).

    python -m benchmarks.curvature --out /tmp/curvature   # any script, from the repository root
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
from server_app.results import versions, write_json

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
"""Where the tables and figures go unless ``--out`` says otherwise: the folder docs/results.md links."""
CACHE = ROOT / "benchmarks" / "results" / "cache"
"""Where :func:`run_parallel` keeps finished runs, so an interrupted benchmark resumes (git-ignored)."""
CORES = os.cpu_count() or 1


def preset(name: str) -> dict[str, Any]:
    """The keys of the experiment preset ``conf/<name>.toml``, read by Flower's own parser: what
    ``flwr run . --run-config conf/<name>.toml`` sends (every other key keeps pyproject's value)."""
    from rabo_protocol.flwr_compat import parse_config_args

    return parse_config_args([str(ROOT / "conf" / f"{name}.toml")])


@dataclass
class Run:
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    summary: dict[str, Any]


def run_inprocess(config: Mapping[str, Any], num_nodes: int, results_dir: Path,
                  node_configs: Sequence[Mapping[str, Any]] | None = None) -> Run:
    """One run of the app on the in-process grid; returns its metrics and client rows."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_config = {**config, "results-dir": str(results_dir)}
    run_dir = run(InProcessGrid(client_app, num_nodes, run_config, node_configs=node_configs),
                  parse_run_config(run_config))
    clients = []
    if (run_dir / "clients.csv").is_file():
        with (run_dir / "clients.csv").open() as handle:
            clients = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    return Run(dict(config), json.loads((run_dir / "metrics.json").read_text()), clients,
               json.loads((run_dir / "summary.json").read_text()))


@dataclass(frozen=True)
class Job:
    """One run for :func:`run_parallel`: a key to find it by, its config and its number of nodes."""

    key: tuple[Any, ...]
    config: dict[str, Any]
    num_nodes: int
    after: Callable[[Path, dict[str, Any]], dict[str, float]] | None = None
    """Measures the finished run (its directory, its config) in the worker, before the directory
    is removed; what it returns joins the curve's last point. A module-level function."""


def curve_of(result: Run) -> list[dict[str, float]]:
    """Per round: test accuracy, the mean accuracy on the upper half of the classes (the weak
    clients' classes in a budget-correlated or separated split), the lowest per-class accuracy,
    the per-class accuracy, centred logit and its scale (lists by class), cumulative client GFLOPs and MB sent
    + received, and the round's coverage (C_x*, C_y*, share of x trained), detection F1
    (hyper-cleaning), share of clipped RAFBO steps, the accuracy of each deployed width
    (``test-accuracy@<r>``) and the nodes' own evaluation (``federated-eval-*``, in the rounds of
    ``node-eval-every``)."""
    curve, flops, traffic = [], 0, 0
    for row in result.rows:
        flops += row.get("client-flops", 0)
        traffic += row.get("bytes-down", 0) + row.get("bytes-up", 0)
        classes = sorted(int(k.rsplit("-", 1)[1]) for k in row if k.startswith("class-accuracy-"))
        half = (max(classes) + 1) // 2 if classes else 0
        upper = [row[f"class-accuracy-{c}"] for c in classes if c >= half]
        lower = [row[f"class-accuracy-{c}"] for c in classes if c < half]
        curve.append({"round": row["round"], "accuracy": row["test-accuracy"],
                      "upper-classes-accuracy": statistics.mean(upper) if upper else float("nan"),
                      "lower-classes-accuracy": statistics.mean(lower) if lower else float("nan"),
                      "min-class-accuracy": min((row[f"class-accuracy-{c}"] for c in classes),
                                                default=float("nan")),
                      "class-accuracy": [row[f"class-accuracy-{c}"] for c in classes],
                      "class-logit": [row.get(f"class-logit-{c}", float("nan")) for c in classes],
                      "class-logit-scale": [row.get(f"class-logit-scale-{c}", float("nan")) for c in classes],
                      "gflops": flops / 1e9, "mb": traffic / 2**20,
                      **{k: row[k] for k in ("coverage-x-min", "coverage-y-min", "coverage-x-fraction",
                                   "detection-f1", "outer-steps-clipped")
                         if k in row},
                      **{k: v for k, v in row.items()
                         if k.startswith(("federated-eval-", "test-accuracy@"))}})
    return curve


def _run_job(job: Job) -> tuple[tuple[Any, ...], list[dict[str, float]], float]:
    import tempfile

    import torch

    torch.set_num_threads(1)  # one core per run: the runs in parallel are the parallelism
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_inprocess(job.config, job.num_nodes, Path(tmp))
        curve = curve_of(result)
        if job.after is not None:
            curve[-1] |= job.after(next(Path(tmp).iterdir()), job.config)
    return job.key, curve, time.perf_counter() - start


def run_parallel(jobs: Sequence[Job], workers: int,
                 cache: Path | None = None) -> dict[tuple[Any, ...], list[dict[str, float]]]:
    """Run ``jobs`` in ``workers`` processes (one torch thread each); key -> accuracy/cost curve.

    Every run is seeded by its config alone, so the results do not depend on ``workers``. With
    ``cache`` (a directory), each finished run is kept there as JSON (named by a hash of its config
    and node count) and an interrupted benchmark resumes without repeating it.
    """
    import hashlib
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from rich.progress import Progress

    def cached(job: Job) -> Path | None:
        if cache is None:
            return None
        text = json.dumps([job.config, job.num_nodes], sort_keys=True)
        return cache / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"

    curves: dict[tuple[Any, ...], list[dict[str, float]]] = {}
    todo = []
    for job in jobs:
        path = cached(job)
        if path is not None and path.is_file():
            curves[job.key] = json.loads(path.read_text())
        else:
            todo.append(job)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"{len(jobs) - len(todo)} of {len(jobs)} runs from the cache {cache}")
    with Progress() as progress, ProcessPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task("runs", total=len(todo))
        futures = {pool.submit(_run_job, job): job for job in todo}
        for future in as_completed(futures):
            key, curve, seconds = future.result()
            curves[key] = curve
            path = cached(futures[future])
            if path is not None:
                write_json(path, curve)
            progress.console.print(f"{' '.join(map(str, key))}: final accuracy {curve[-1]['accuracy']:.3f} "
                                   f"({seconds:.0f} s)")
            progress.advance(task)
    return curves


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_table(out: Path, name: str, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Print ``rows`` as a table and write ``<out>/<name>.csv`` and ``<name>.json`` (the rows, the
    settings in ``meta``, and the versions). Returns the CSV path."""
    out.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = out / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / f"{name}.json", {"meta": dict(meta), "versions": versions(), "rows": list(rows)})
    print(format_table(rows, columns))
    print(f"\nwritten: {path} (+ .json)")
    return path


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def run_config_text(config: Mapping[str, Any]) -> str:
    """``config`` as ``flwr run --run-config`` text: strings quoted, booleans lower case, the rest as is.

    >>> run_config_text({"task": "hyper-cleaning", "label-noise": 0.5, "profile": False})
    "task='hyper-cleaning' label-noise=0.5 profile=false"
    """
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return f"'{v}'" if isinstance(v, str) else repr(v)
    return " ".join(f"{k}={value(v)}" for k, v in config.items())


def figure_path(out: Path, name: str) -> Path:
    """``<out>/<name>.png``, its folder made."""
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}.png"


FLAGS = {"seeds": "number of seeds, 0 to N-1", "rounds": "rounds of each run",
         "workers": "runs in parallel, one core and one torch thread each"}
"""The counts the benchmarks share, by flag name: what each means."""


def benchmark_parser(doc: str, *, quick: str | None = "the short variant of the module docstring",
                     out: bool = True, **defaults: int | None) -> argparse.ArgumentParser:
    """The flags the benchmarks share, with one meaning everywhere: ``--out`` (where the tables and
    figures go, default docs/results; ``out=False``: the script writes no files), ``--quick`` (its
    help ``quick``; None: no such flag) and, for each keyword of :data:`FLAGS` given, ``--seeds``,
    ``--rounds`` or ``--workers`` with the script's default (None: the script decides, e.g. by
    ``--quick``).

    >>> args = benchmark_parser("A benchmark.", seeds=3, workers=2).parse_args(["--quick"])
    >>> args.quick, args.seeds, args.workers, args.out.name
    (True, 3, 2, 'results')
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if out:
        parser.add_argument("--out", type=Path, default=OUT,
                            help="folder for the CSV, JSON and PNG files (default: docs/results)")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    for flag, default in defaults.items():
        told = "the script's choice" if default is None else default
        parser.add_argument(f"--{flag}", type=int, default=default, help=f"{FLAGS[flag]} (default: {told})")
    return parser


def save_figure(fig: Any, out: Path, name: str, dpi: int = 100) -> None:
    """Lay out ``fig`` and write it to ``<out>/<name>.png``."""
    fig.tight_layout()
    fig.savefig(figure_path(out, name), dpi=dpi)
    print(f"written: {figure_path(out, name)}")


def median_seconds(calls: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, float]:
    """Median wall time of each call; the calls take turns, so load changes hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for rep in range(warmup + reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_style(index: int) -> dict[str, Any]:
    """A line style for the ``index``-th method: a colour, a line style and a marker, so that no
    two of the first 32 methods look alike (matplotlib's cycle repeats its 10 colours)."""
    return {"color": COLORS[index % len(COLORS)],
            "linestyle": LINESTYLES[(index // len(COLORS)) % len(LINESTYLES)],
            "marker": MARKERS[index % len(MARKERS)], "markersize": 4, "markevery": 0.2}
