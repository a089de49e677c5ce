"""Wall-clock to accuracy on slow devices: the virtual clock against a real deployment of throttled
SuperNodes.

    python -m benchmarks.wallclock --rounds 6       # both clocks, IID and budget-correlated
    python -m benchmarks.wallclock --clock virtual  # no cgroups needed
    python -m benchmarks.wallclock --quick          # 4 rounds, IID only

The federation: the default run's task (CNN, MNIST digits) on 10 clients at four speeds: client i
gets ``SHARES[i % 4]`` = 0.28, 0.14, 0.07, 0.035 of one core (the order of ``ratio-levels``, so
``budget-correlated`` puts the unusual labels on the slower devices), 1.47 cores in all, what this
2-core machine can give its SuperNodes beside the SuperLink and the ServerApp.

* **Real**: one SuperLink and 10 SuperNodes, each with a warm executor (``deploy/warm_exec.py``:
  a message's process is a fork, not a new interpreter) under its CPU quota (``deploy/throttle.py``,
  cgroups), one torch thread each; every node's data is in its cache before the first run
  (:func:`prepare_data`); ``flwr run`` submits each method; the rounds' seconds are the server's
  wall-clock (``elapsed-seconds``, its evaluation included), the energy proxy the CPU-seconds each
  node's cgroup used during the run.
* **Virtual**: the same runs on the in-process grid, on the virtual clock, with a device file
  whose classes are this machine's core (its local-round speed fitted here, ``host_speed``)
  times each share, over each class's slowdown measured by the real IID full-model run
  (:func:`measured_slowdown`; that run comes first); its seconds are the cumulative
  ``simulated-seconds``. The deadline: ``HEADROOM`` x the fastest class's full-model round by
  that measurement; the grace: twice the SuperNodes' polling (``GRACE_S``).

Methods: ``resource-adaptive`` with ``capacity='deadline'`` (each node sizes its submodel to the
deadline), ``full-model`` (every node the full model: the round waits for the slowest),
``drop-weak`` with ``capacity='deadline'`` (nodes whose deadline ratio is below 1 sit out: with
the default ``deadline-min-share``, a node that fits half of the full model's round trains it
with the steps that fit), ``drop-weak-whole`` (the same with ``deadline-min-share=1``: only the
nodes that fit the full model's whole round train) and ``drop-weak-budget`` (the nodes whose
``ratio-levels`` budget is below 1, all but the 0.28 ones, sit out; the others train the full
model, and the round waits for them). Runs
count no FLOPs and no memory on the nodes (``profile=false``: the counters cost the round 20 to
60 %). Writes ``wallclock-<work>.csv`` (one row per clock, split, method, round), ``-summary.csv``,
``-targets.csv``, ``-devices.toml``, ``-host.json`` and ``.png`` to ``--out``; finished runs, the
measured host and the device file stay in ``benchmarks/results/cache`` for the next invocation.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord

from benchmarks.common import (
    CACHE,
    ROOT,
    benchmark_parser,
    method_style,
    run_inprocess,
    save_figure,
    write_table,
)
from benchmarks.vocab import splits
from client_app.app import local_data
from client_app.budget import probe_round
from deploy.processes import flwr_json, stop
from deploy.throttle import Throttle, detect
from deploy.warm_exec import READY
from rabo_protocol import parse_node_config, parse_run_config
from server_app.results import write_json
from tasks import make_task

SHARES = (0.28, 0.14, 0.07, 0.035)
NUM_NODES = 10
POLL_S = 3.0
"""Seconds a message may wait on a SuperNode besides its work: Flower 1.42's SuperNode asks the
SuperLink for messages every 3 s when it has none, and pushes a reply at its next pass."""
GRACE_S = 2 * POLL_S
"""``deadline-grace``: a reply whose work met the deadline may wait up to twice the polling (the
virtual classes charge it as ``poll-s``, which a node does not size its work by)."""
CLIENT_COLUMNS = ("round", "partition-id", "resource-ratio", "train-seconds", "local-seconds",
                  "predicted-seconds", "step-share")
LOOPBACK_MBPS = 10_000.0  # the virtual classes' links: localhost, where bytes cost next to nothing
METHODS: dict[str, dict[str, Any]] = {  # full-model first: its IID run measures the devices
    "full-model": {"strategy": "full-model"},
    "resource-adaptive": {"strategy": "resource-adaptive", "capacity": "deadline"},
    "drop-weak": {"strategy": "drop-weak", "capacity": "deadline"},
    "drop-weak-budget": {"strategy": "drop-weak"},  # ratio-levels by partition: the 0.28 nodes are full
    "drop-weak-whole": {"strategy": "drop-weak", "capacity": "deadline", "deadline-min-share": 1.0},
}
HEADROOM = 1.2
"""The deadline: this much more than the fastest devices need for the full model's local round."""
SPLITS = splits("iid", "budget-correlated")
WORK: dict[str, dict[str, Any]] = {"default": {}, "heavy": {"batch-size": 256, "outer-steps": 9}}
"""Local work per round: the default run's (0.3 s of a core for the full model, against 2.7 s to
start a ClientApp process), or about 9x that (``heavy``), comparable to the start."""
BIN = Path(sys.executable).parent


def startup_cpu_seconds(reps: int = 3) -> float:
    """Median CPU-seconds a message's process spends importing the ClientApp before any work: a fork
    of a process that imported ``deploy.warm_exec``'s preloads, as on the benchmark's SuperNodes,
    importing the app from a copy of its sources without bytecode, as from an installed FAB."""
    code = ("import os, sys\nfrom deploy.warm_exec import DEFAULT_PRELOAD, preload\n"
            "preload(DEFAULT_PRELOAD)\n"
            f"for _ in range({reps}):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        sys.dont_write_bytecode = True; sys.path.insert(0, sys.argv[1])\n"
            "        import client_app.app; os._exit(0)\n"
            "    os.waitpid(pid, 0)\n"
            "    print(os.times().children_user + os.times().children_system, flush=True)\n")
    with tempfile.TemporaryDirectory() as fab:
        for package in ("bilevel", "client_app", "rabo_protocol", "rabo_pruning", "tasks"):
            shutil.copytree(ROOT / package, Path(fab) / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        out = subprocess.run([sys.executable, "-c", code, fab], cwd=tempfile.gettempdir(), check=True,
                             capture_output=True, text=True)
    cumulative = [0.0, *map(float, out.stdout.split())]
    return statistics.median(b - a for a, b in zip(cumulative, cumulative[1:], strict=False))


def host_speed(work: Mapping[str, Any], reps: int = 5) -> tuple[float, float, float, float]:
    """(GFLOP/s, ms per step, seconds of a 1/8-model and of a full-model local round) of one core
    of this machine on the default CNN: a least squares fit of the median seconds of one outer step
    at each ratio level to its FLOPs and steps."""
    torch.set_num_threads(1)
    cfg = parse_run_config({**work, "profile": True})
    task = make_task(cfg.task, cfg.data_spec(NUM_NODES), cfg.mu)
    node = parse_node_config({"partition-id": 0, "num-partitions": NUM_NODES})
    data = local_data(cfg, node, ConfigRecord())
    rows, seconds = [], []
    for ratio in cfg.ratio_levels:
        counted = probe_round(task, data, cfg, ratio, profile=True, one_outer_step=True)
        rows.append([float(counted["flops"]) / 1e9, float(counted["steps"])])  # type: ignore[arg-type]
        seconds.append(statistics.median(
            float(probe_round(task, data, cfg, ratio, one_outer_step=True)["train-seconds"])  # type: ignore[arg-type]
            for _ in range(reps)))
    (per_gflop, per_step), *_ = np.linalg.lstsq(np.array(rows), np.array(seconds), rcond=None)
    outer = cfg.solver_config().outer_steps
    smallest, largest = (outer * (row[0] * per_gflop + row[1] * per_step) for row in (rows[-1], rows[0]))
    return 1.0 / per_gflop, 1000.0 * per_step, float(smallest), float(largest)


def device_file(path: Path, gflops: float, step_ms: float, startup: float,
                slowdown: tuple[float, ...] = (1.0,) * len(SHARES)) -> list[str]:
    """Write the throttled classes to ``path``: this core times each share, divided by the class's
    measured ``slowdown``, behind a SuperNode that polls every ``POLL_S``; returns their names."""
    names = [f"core-{share:g}" for share in SHARES]
    path.write_text("".join(
        f'["{name}"]\ngflops = {gflops * share / k:.6g}\nstep-ms = {step_ms * k / share:.6g}\n'
        f'startup-s = {startup * k / share:.6g}\npoll-s = {POLL_S:g}\n'
        f'down-mbps = {LOOPBACK_MBPS}\nup-mbps = {LOOPBACK_MBPS}\n'
        f'source = "this machine: {gflops:.1f} GFLOP/s, {step_ms:.2f} ms a step, {startup:.2f} s to start, '
        f'x {share:g} of a core / {k:.3g} (measured slowdown); a Flower 1.42 SuperNode\'s polls"\n\n'
        for name, share, k in zip(names, SHARES, slowdown, strict=True)))
    return names


def measured_slowdown(clients: list[dict[str, Any]], largest: float) -> tuple[float, ...]:
    """Per speed class, from a real full-model run's replies: the median seconds its nodes took for
    the full model's local round, over what this core's fit (``largest``) at their share predicts;
    1 for a class with no such reply."""
    slowdown = []
    for c, share in enumerate(SHARES):
        seconds = [float(r["train-seconds"]) for r in clients
                   if int(r["partition-id"]) % len(SHARES) == c and float(r["resource-ratio"]) == 1.0]
        slowdown.append(statistics.median(seconds) * share / largest if seconds else 1.0)
    return tuple(slowdown)


def run_config(method: str, split: str, work: str, rounds: int, deadline: float) -> dict[str, Any]:
    return {**METHODS[method], **SPLITS[split], **WORK[work], "num-server-rounds": rounds,
            "round-deadline": deadline, "deadline-grace": GRACE_S, "seed": 0, "profile": False}


def virtual_run(config: Mapping[str, Any], devices: Path, names: list[str],
                out: Path) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """One run on the virtual clock: its rows (``seconds``: cumulative simulated seconds) and the
    CPU-seconds throttled nodes would spend on its replies: each reply's simulated start and
    computation times its class's share of a core."""
    result = run_inprocess({**config, "profile": True, "profile-memory": False,
                            "device-profiles": str(devices), "device-classes": ", ".join(names)},
                           NUM_NODES, out)
    total, rows = 0.0, []
    for row in result.rows:
        total += float(row.get("simulated-seconds", 0.0))
        rows.append({**row, "seconds": total})
    catalogue = parse_run_config({"device-profiles": str(devices)}).device_catalogue()
    cpu = 0.0
    for client in result.clients:
        c = int(client["partition-id"]) % len(names)
        device = catalogue[names[c]]
        cpu += SHARES[c] * (device.compute_seconds(client["flops"], client["steps"]) + device.startup_s)
    return rows, cpu, []


def prepare_data(configs: list[dict[str, Any]]) -> None:
    """Put every node's partition of each run's data in the nodes' data cache
    (``tasks/disk_cache.py``), as a device holds its data before it trains: the deployment's rounds
    then time the federation, not the first message's parsing and partitioning of MNIST (about
    3 s of CPU, 90 s on the slowest device here, in whichever run came first)."""
    for config in configs:
        cfg = parse_run_config(config)
        for i in range(NUM_NODES):
            node = parse_node_config({"partition-id": i, "num-partitions": NUM_NODES})
            local_data(cfg, node, ConfigRecord())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throttled_deployment(work: Path) -> Iterator[tuple[dict[str, str], list[Throttle]]]:
    """A SuperLink and ``NUM_NODES`` SuperNodes, node i under ``SHARES[i % 4]`` of a core, each
    with a ``deploy.warm_exec`` beside it under the same quota; yields the flwr CLI's
    environment and the nodes' cgroups. Everything is stopped and removed on exit."""
    home, logs = work / "flwr-home", work / "logs"
    home.mkdir()
    logs.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "wallclock"\n\n[superlink.wallclock]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes: list[subprocess.Popen] = []
    groups = [Throttle(f"wallclock{i}") for i in range(NUM_NODES)]
    runtimes: list[str] = []

    def start(name: str, *command: str) -> None:
        processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.STDOUT,
                                          stdout=(logs / f"{name}.log").open("w")))

    try:
        start("superlink", str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
              "--port", str(port))
        _wait(lambda: _healthy(port), 30, "the SuperLink did not become healthy")
        for i in range(NUM_NODES):
            throttle = (sys.executable, "-m", "deploy.throttle", "--cpu", str(SHARES[i % len(SHARES)]),
                        "--name", groups[i].name, "--")
            runtime = _free_port()
            runtimes.append(f"127.0.0.1:{runtime}")
            start(f"sn{i}", *throttle, str(BIN / "flower-supernode"), "--insecure",
                  "--superlink", f"127.0.0.1:{port}", "--port", str(runtime),
                  "--node-config", f"partition-id={i} num-partitions={NUM_NODES}", "--isolation", "process")
            # the node's ClientApp processes: forks of a warm one, in the node's cgroup
            start(f"exec{i}", *throttle, sys.executable, "-m", "deploy.warm_exec", "--insecure",
                  "--runtime-api-address", f"127.0.0.1:{runtime}")
        # the throttled SuperNodes import Flower, and their executors torch, at a fraction of a core
        _wait(lambda: len(_flwr(env, "supernode", "list", "wallclock").get("nodes", [])) == NUM_NODES, 300,
              "the SuperNodes did not all connect")
        _wait(lambda: all(READY in (logs / f"exec{i}.log").read_text() for i in range(NUM_NODES)), 600,
              "the warm executors did not all finish their imports")
        yield env, groups
    finally:
        stop(processes)
        subprocess.run(["pkill", "-TERM", "-f", "flwr-clientapp"], check=False)
        for address in runtimes:  # an executor at 1/45 of a core outlived its throttle wrapper's stop
            subprocess.run(["pkill", "-TERM", "-f", f"deploy.warm_exec .*--runtime-api-address {address}$"],
                           check=False)
        time.sleep(2)
        for group in groups:
            try:
                group.remove()
            except Exception as err:  # noqa: BLE001 - a group still busy is reported, not fatal
                print(f"could not remove cgroup {group.name}: {err}")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except OSError:
        return False


def _wait(ready: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{failure} within {timeout:g} s")
        time.sleep(1)


def _flwr(env: Mapping[str, str], *args: str) -> dict[str, Any]:
    return flwr_json(dict(env), *args, cwd=ROOT)


def real_run(config: Mapping[str, Any], env: Mapping[str, str], groups: list[Throttle],
             out: Path) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """Submit one run to the throttled deployment; its rows, the nodes' CPU-seconds and its
    replies' timings (clients.csv)."""
    before = [g.cpu_seconds() or 0.0 for g in groups]
    keys = " ".join(f"{k}={json.dumps(v)}" for k, v in {**config, "results-dir": str(out)}.items())
    run_id = _flwr(env, "run", ".", "wallclock", "--run-config", keys)["run-id"]
    # every `flwr list` starts a Python process (about 0.7 s of CPU): poll rarely, beside throttled nodes
    while not (entry := _flwr(env, "list", "--run-id", str(run_id))["runs"][0])["status"].startswith(
            "finished"):
        time.sleep(20)
    if entry["status"] != "finished:completed":
        raise RuntimeError(f"run {run_id}: {entry['status']} {entry.get('status-details')}")
    cpu = sum((g.cpu_seconds() or 0.0) - b for g, b in zip(groups, before, strict=True))
    (run_dir,) = out.iterdir()
    rows = json.loads((run_dir / "metrics.json").read_text())
    clients = []  # no clients.csv: no reply was ever aggregated
    if (run_dir / "clients.csv").is_file():
        with (run_dir / "clients.csv").open() as file:
            clients = [{k: r[k] for k in CLIENT_COLUMNS if k in r} for r in csv.DictReader(file)]
    return [{**r, "seconds": float(r["elapsed-seconds"])} for r in rows], cpu, clients


def time_to(rows: list[dict[str, Any]], target: float) -> float | None:
    """Seconds at the first round whose test accuracy reaches ``target`` (None: never)."""
    return next((float(r["seconds"]) for r in rows if float(r["test-accuracy"]) >= target), None)


def summarize(runs: dict[tuple[str, str, str], tuple[list[dict[str, Any]], float]],
              closes_at: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per run: final accuracy, seconds, time to 90 % of the full model's final accuracy (same
    clock and split), CPU-seconds, longest train round; and the targets, each met or not."""
    summary = []
    for (clock, split, method), (rows, cpu) in runs.items():
        full = runs.get((clock, split, "full-model"))
        target = 0.9 * float(full[0][-1]["test-accuracy"]) if full else float("nan")
        train = [float(r["train-round-seconds"]) for r in rows[1:]]
        summary.append({"clock": clock, "split": split, "method": method, "rounds": len(rows) - 1,
                        "final-accuracy": float(rows[-1]["test-accuracy"]),
                        "seconds": float(rows[-1]["seconds"]),
                        "target-accuracy": target, "seconds-to-target": time_to(rows, target),
                        "cpu-seconds": cpu, "longest-train-round": max(train),
                        "late-replies": sum(int(r.get("late-replies", 0)) for r in rows[1:]),
                        "failed-replies": sum(int(r.get("failed-replies", 0)) for r in rows[1:])})
    by = {(s["clock"], s["split"], s["method"]): s for s in summary}
    targets = []
    for (clock, split, method), s in by.items():
        if method != "resource-adaptive":
            continue
        full = by.get((clock, split, "full-model"))
        if full and full["seconds-to-target"]:  # never reached: measured None, not met
            ratio = (None if s["seconds-to-target"] is None
                     else s["seconds-to-target"] / full["seconds-to-target"])
            targets.append({"clock": clock, "split": split, "target": "time to 90% of full <= 0.5x full's",
                            "measured": ratio, "met": ratio is not None and ratio <= 0.5})
        for dropped in ("drop-weak", "drop-weak-whole", "drop-weak-budget"):
            if (weak := by.get((clock, split, dropped))) is None or split != "budget-correlated":
                continue
            gap = 100 * (s["final-accuracy"] - weak["final-accuracy"])
            trained = any(int(r.get("replies") or 0) for r in runs[(clock, split, dropped)][0][1:])
            targets.append({"clock": clock, "split": split, "measured": gap, "met": gap >= 10 and trained,
                            "target": f"beats {dropped} by >= 10 points" + ("" if trained else
                                                                           f" ({dropped} trained no round)")})
        if clock == "real":
            targets.append({"clock": clock, "split": split, "target": f"train rounds <= deadline + grace "
                            f"({closes_at:g} s)", "measured": s["longest-train-round"],
                            "met": s["longest-train-round"] <= closes_at})
    for (clock, split, method), (rows, _) in runs.items():
        if clock != "real" or ("virtual", split, method) not in runs:
            continue
        virtual = runs[("virtual", split, method)][0]
        errors = [abs(float(v["simulated-seconds"]) / float(r["train-round-seconds"]) - 1)
                  for v, r in zip(virtual[1:], rows[1:], strict=False)
                  if int(r.get("replies") or 0) and int(v.get("replies") or 0)]  # rounds both trained
        if not errors:
            continue
        median = statistics.median(errors)
        targets.append({"clock": "both", "split": split, "measured": median, "met": median <= 0.2,
                        "target": f"virtual round time within 20 % ({method})"})
    return summary, targets


def figure(runs: dict[tuple[str, str, str], tuple[list[dict[str, Any]], float]], splits: list[str],
           out: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for i, method in enumerate(METHODS):
            for clock, dashes in (("real", "-"), ("virtual", "--")):
                if (clock, split, method) in runs:
                    rows = runs[(clock, split, method)][0]
                    style = {**method_style(i), "linestyle": dashes}
                    ax.plot([r["seconds"] for r in rows], [r["test-accuracy"] for r in rows],
                            label=f"{method} ({clock})", **style)
        ax.set(xlabel="seconds (real: wall-clock; virtual: simulated)", ylabel="test accuracy",
               title=split, ylim=(0, 1))
        ax.legend(fontsize=8)
    save_figure(fig, out, name)


def main() -> None:
    parser = benchmark_parser(__doc__, rounds=10)
    parser.add_argument("--clock", choices=("both", "virtual", "real"), default="both",
                        help="which runs to do now (the others: from the cache of an earlier invocation)")
    parser.add_argument("--work", choices=list(WORK), default="heavy", help="local work per round (WORK)")
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to run now")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run now")
    parser.add_argument("--again", action="store_true", help="run again the runs already in the cache")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="round-deadline (default: HEADROOM x what the fastest devices need to start "
                             "and run the full model, by this core's fit and their slowdown measured in "
                             "the real IID full-model run: they train it, the slower ones less)")
    args = parser.parse_args()
    load = os.getloadavg()
    rounds, splits = (4, ["iid"]) if args.quick else (args.rounds, list(SPLITS))
    # the machine's measured speed, the deadline and the devices, fixed by the first invocation
    cache = CACHE / f"wallclock-{args.work}-{rounds}rounds"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "host.json").is_file():
        gflops, step_ms, smallest, largest = host_speed(WORK[args.work])
        write_json(cache / "host.json", {"gflops": gflops, "step-ms": step_ms, "smallest-round": smallest,
                                         "largest-round": largest, "startup": startup_cpu_seconds()})
    host = json.loads((cache / "host.json").read_text())
    gflops, step_ms, smallest, largest, startup = (
        host[k] for k in ("gflops", "step-ms", "smallest-round", "largest-round", "startup"))
    print(f"this core: {gflops:.1f} GFLOP/s, {step_ms:.2f} ms a step, {startup:.2f} s to start a ClientApp, "
          f"a 1/8-model round {smallest:.2f} s", flush=True)
    devices = cache / "devices.toml"

    def calibrated() -> tuple[tuple[float, ...], float, list[str]]:
        """The classes' measured slowdown (from the real IID full-model run, where there is one),
        the deadline it gives and the device file's class names."""
        calibration = cache / "real-iid-full-model.json"
        measured = json.loads(calibration.read_text()).get("clients", []) if calibration.is_file() else []
        slowdown = measured_slowdown(measured, largest)
        deadline = args.deadline or round(HEADROOM * (startup + largest) * slowdown[0] / SHARES[0], 1)
        return slowdown, deadline, device_file(devices, gflops, step_ms, startup, slowdown)
    runs: dict[tuple[str, str, str], tuple[list[dict[str, Any]], float]] = {}
    support = detect()
    real = support.reason if args.clock != "virtual" else "not run in this invocation"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for clock in ("virtual", "real"):
            keys = [(clock, split, method) for split in splits for method in METHODS]
            now = [k for k in keys if k[1] in args.splits.split(",") and k[2] in args.methods.split(",")
                   and (args.again or not (cache / f"{'-'.join(k)}.json").is_file())]
            if now and args.clock in (clock, "both") and (clock == "virtual" or support.version is not None):
                deployment = (throttled_deployment(scratch) if clock == "real"
                              else nullcontext((None, None)))
                if clock == "real":
                    prepare_data([{**SPLITS[split], **WORK[args.work]} for split in {k[1] for k in now}])
                with deployment as (env, groups):
                    for key in now:
                        slowdown, deadline, names = calibrated()
                        print(f"{' '.join(key)}: round-deadline {deadline} s, slowdown {slowdown}",
                              flush=True)
                        config = run_config(key[2], key[1], args.work, rounds, deadline)
                        out = scratch / "-".join(key)
                        result = (virtual_run(config, devices, names, out) if clock == "virtual"
                                  else real_run(config, env, groups, out))  # type: ignore[arg-type]
                        stored = {"rows": result[0], "cpu-seconds": result[1], "clients": result[2],
                                  "round-deadline": deadline, "slowdown": slowdown}
                        write_json(cache / f"{'-'.join(key)}.json", stored)
                        print(f"{' '.join(key)}: {result[0][-1]['test-accuracy']:.3f}", flush=True)
    slowdown, deadline, _ = calibrated()
    closes_at = deadline + GRACE_S
    for key in [(c, s, m) for c in ("virtual", "real") for s in splits for m in METHODS]:
        if (cache / f"{'-'.join(key)}.json").is_file():
            stored = json.loads((cache / f"{'-'.join(key)}.json").read_text())
            if ("capacity" in METHODS[key[2]] and stored.get("round-deadline") != deadline) or (
                    key[0] == "virtual" and tuple(stored.get("slowdown", ())) != slowdown):
                raise SystemExit(f"{cache}/{'-'.join(key)}.json ran with round-deadline "
                                 f"{stored.get('round-deadline')} s and slowdown {stored.get('slowdown')}, "
                                 f"this invocation's are {deadline} s and {slowdown}: remove it, or pass "
                                 "--deadline")
            runs[key] = stored["rows"], stored["cpu-seconds"]
    meta = {"work": args.work, "work-keys": WORK[args.work], "rounds": rounds, "splits": splits,
            "shares": SHARES, "round-deadline": deadline,
            "closes-at": closes_at, "host-gflops": gflops, "host-step-ms": step_ms,
            "host-startup-cpu-seconds": startup, "smallest-round-seconds": smallest,
            "largest-round-seconds": largest, "class-slowdown": slowdown,
            "real-deployment": real, "load-average-at-start": load, "load-average-at-end": os.getloadavg()}
    columns = ("round", "test-accuracy", "seconds", "train-round-seconds", "simulated-seconds", "replies",
               "failed-replies", "late-replies", "client-flops")
    name = f"wallclock-{args.work}"
    write_table(args.out, name, [{"clock": c, "split": s, "method": m, **{k: r.get(k) for k in columns}}
                                 for (c, s, m), (rows, _) in runs.items() for r in rows], meta)
    summary, targets = summarize(runs, closes_at)
    write_table(args.out, f"{name}-summary", summary, meta)
    write_table(args.out, f"{name}-targets", targets, meta)
    shutil.copy(devices, args.out / f"{name}-devices.toml")
    shutil.copy(cache / "host.json", args.out / f"{name}-host.json")
    figure(runs, splits, args.out, name)


if __name__ == "__main__":
    main()
