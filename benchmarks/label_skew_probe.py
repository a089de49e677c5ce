"""Label skew, the mechanism: is a run's gap to the full model in its head or in its features, and
whose updates move which classifier rows?

For each (task, method, loss) on the separated split (the full-size clients hold classes 0-4, the
others 5-9) and Dirichlet(0.3), one run of ``--rounds`` rounds on the in-process grid, then:

- **probe**: the run's features x frozen, a new linear head fitted centrally (multinomial logistic
  regression, L-BFGS) on the pooled training data of all clients; its test accuracy per class
  group. A probe far above the run's own accuracy says the features hold what the head misses
  (calibration); a probe near it says the features themselves lack it.
- **who moves what**: every train reply of one more round from the final model, recorded at the
  grid: per client group (full-size clients, the smaller ones), the RMS of its y update on the
  classifier rows of classes 0-4 and of 5-9, and the RMS of its x direction (RABO: h; RAFBO: its
  local x change).

    python -m benchmarks.label_skew_probe            # 2 tasks x 2 scenarios x 8 runs, 20 rounds
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord

from benchmarks.common import CORES, benchmark_parser, curve_of, run_inprocess, write_table
from benchmarks.label_skew import LOSSES, METHODS
from benchmarks.vocab import HYPER_REPRESENTATION, SPLITS, TASKS, sampled
from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, pack, unpack
from server_app.inprocess import InProcessGrid
from server_app.strategies import build_strategy
from tasks import Batch, client_data, holdout_set, make_task
from tasks.partition import partition_ratios

RUNS = [("full-model", "plain"), ("full-model", "masked+holders"), ("rabo", "plain"),
        ("rabo", "masked+holders"), ("rabo", "masked+covered"), ("rafbo", "plain"),
        ("rafbo", "masked+holders"), ("rafbo", "masked+covered")]


FULL_MODEL = {"full-model": {"algorithm": "rabo"}}
"""The probe's full model runs RABO (label-skew-probe.csv was measured so)."""


class RecordingGrid(InProcessGrid):
    """The in-process grid, keeping every (train message, reply) pair it delivers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered: list[tuple[Any, Any]] = []

    def _deliver(self, message: Any) -> tuple[Any, float]:
        reply, seconds = super()._deliver(message)
        if message.metadata.message_type == "train":
            self.delivered.append((message, reply))
        return reply, seconds


def probe(task_name: str, config: dict[str, Any], parts: dict[str, dict[str, torch.Tensor]],
          num_nodes: int) -> dict[str, float]:
    """Test accuracy (all, classes 0-4, 5-9) of a head refitted on the frozen features."""
    cfg = parse_run_config(config)
    spec = cfg.data_spec(num_nodes)
    task = make_task(task_name, spec, cfg.mu)
    model = task.build_model(task.full_widths())
    x = {k: v.float() for k, v in parts["x"].items()}
    pooled = [client_data(spec, i) for i in range(num_nodes)]
    with torch.no_grad():
        def feats(batch: Batch) -> torch.Tensor:
            return task.features(model, x, batch)

        train_f = torch.cat([feats(d.train) for d in pooled] + [feats(d.val) for d in pooled])
        train_y = torch.cat([d.train.labels for d in pooled] + [d.val.labels for d in pooled])
        test = holdout_set(spec)
        test_f = feats(test)
    head = torch.nn.Linear(train_f.shape[1], 10)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(train_f), train_y) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        correct = (head(test_f).argmax(1) == test.labels).float()
    return {"probe-accuracy": float(correct.mean()),
            "probe-classes-0-4": float(correct[test.labels < 5].mean()),
            "probe-classes-5-9": float(correct[test.labels >= 5].mean())}


def who_moves_what(config: dict[str, Any], model: dict[str, dict[str, np.ndarray]],
                   num_nodes: int) -> dict[str, float]:
    """One more round from ``model``: per client group (by the budget of its partition, ratio 1 or
    below, also where the strategy trains everyone at full size), the RMS of its y update on the
    rows of classes 0-4 and 5-9 and of its x direction."""
    cfg = parse_run_config({**config, "num-server-rounds": 1})
    task = make_task(cfg.task, cfg.data_spec(num_nodes), cfg.mu)
    budgets = partition_ratios(cfg.data_spec(num_nodes))
    grid = RecordingGrid(client_app, num_nodes, {**config, "num-server-rounds": 1})
    strategy = build_strategy(cfg, task)
    messages = list(strategy.configure_train(1, pack(model), ConfigRecord(), grid))
    list(grid.send_and_receive(messages))
    groups: dict[str, dict[str, list[float]]] = {}
    for message, reply in grid.delivered:
        if reply.has_error():
            continue
        sent, got = unpack(message.content[ARRAYS]), unpack(reply.content[ARRAYS])
        partition = message.metadata.dst_node_id - 1000  # the in-process grid's node ids
        budget = budgets[partition]  # the data group, whatever the strategy trains
        name = "full-size" if budget == max(budgets) else "smaller"
        group = groups.setdefault(name, {"lower": [], "upper": [], "x": []})
        dy = got["y"]["head.weight"] - sent["y"]["head.weight"]
        group["lower"].append(float(np.sqrt(np.mean(dy[:5] ** 2))))
        group["upper"].append(float(np.sqrt(np.mean(dy[5:] ** 2))))
        dx = [got["h"][k] if "h" in got else got["x"][k] - sent["x"][k] for k in sent["x"]]
        group["x"].append(float(np.sqrt(np.mean(np.concatenate([d.ravel() for d in dx]) ** 2))))
    out = {}
    for name, group in groups.items():
        out |= {f"{name}: rows 0-4": statistics.mean(group["lower"]),
                f"{name}: rows 5-9": statistics.mean(group["upper"]),
                f"{name}: x": statistics.mean(group["x"])}
    return out


def one(key: tuple[str, str, str, str], rounds: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    torch.set_num_threads(1)
    task, scenario, method, loss = key
    task_config, clients, per_round = TASKS[task]
    config = {"num-server-rounds": rounds, "profile": False, **task_config, **SPLITS[scenario],
              **LOSSES[loss], **METHODS[method], **FULL_MODEL.get(method, {}), "seed": 0,
              **sampled(clients, per_round)}
    with tempfile.TemporaryDirectory() as tmp:
        result = run_inprocess(config, clients, Path(tmp))
        run_dir = next(Path(tmp).iterdir())
        saved = torch.load(run_dir / "model.pt", weights_only=True)["parts"]
    last = curve_of(result)[-1]
    row: dict[str, Any] = {
        "task": task, "scenario": scenario, "method": method, "loss": loss,
        "final-accuracy": last["accuracy"],
        "classes-0-4": last["lower-classes-accuracy"],
        "classes-5-9": last["upper-classes-accuracy"],
        "logit-gap-5-9-minus-0-4": statistics.mean(last["class-logit"][5:])
        - statistics.mean(last["class-logit"][:5]),
    }
    row |= probe(task_config["task"], config, saved, clients)
    model = {p: {k: v.numpy() for k, v in saved[p].items()} for p in ("x", "y", "v")}
    row |= who_moves_what(config, model, clients)
    return key, row


def main() -> None:
    parser = benchmark_parser(__doc__, quick=None, rounds=20, workers=CORES)
    parser.add_argument("--tasks", default=",".join(HYPER_REPRESENTATION))
    parser.add_argument("--scenarios", default="separated,dirichlet-0.3")
    args = parser.parse_args()
    keys = [(t, s, m, loss) for t in args.tasks.split(",") for s in args.scenarios.split(",")
            for m, loss in RUNS]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = dict(pool.map(one, keys, [args.rounds] * len(keys)))
    write_table(args.out, "label-skew-probe", [rows[k] for k in keys],
                {"rounds": args.rounds, "runs": RUNS, "losses": LOSSES, "methods": METHODS,
                 "seconds": time.perf_counter() - start, "load-average": os.getloadavg()})


if __name__ == "__main__":
    main()
