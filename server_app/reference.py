"""The server's own update each round, a reference for the agreement screen that no client sets.

With ``root-size`` n > 0 the server holds a root set of n clean samples (``tasks.root_set``; in a
simulation drawn from the clients' pool) and, every round, runs the clients' local round on it at
full width: the run's algorithm, estimator and solver, from the global model it sends. The screen
then judges each reply by its cosine with this update on the reply's own coordinates as well
(``screen-reference``). This is FLTrust's root dataset (Cao et al., "FLTrust: Byzantine-robust
Federated Learning via Trust Bootstrapping", NDSS 2021) used as a referee: it never trains the
model. It costs the server one full-width local round per round.

Per-sample parameters (hyper-cleaning's sample weights) have no root counterpart: the server trains
weights of its own samples and reports a zero update for the clients' (never judged).

Example:
    >>> from rabo_protocol import parse_run_config
    >>> from tasks import make_task, root_set
    >>> cfg = parse_run_config({"dataset": "sklearn-digits", "root-size": 64, "batch-size": 32})
    >>> spec = cfg.data_spec(num_partitions=1)
    >>> task = make_task(cfg.task, spec, cfg.mu)
    >>> x, y = task.init_params(task.full_widths(), task.num_samples)
    >>> parts = {"x": x, "y": y, "v": {k: 0 * t for k, t in y.items()}}
    >>> reference = ServerReference(task, cfg, root_set(spec, cfg.root_size), torch.device("cpu"))
    >>> update = reference({p: {k: t.numpy() for k, t in d.items()} for p, d in parts.items()}, 1)
    >>> sorted(update) == ["v", "x", "y"] and all(u.shape == x[k].shape for k, u in update["x"].items())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from bilevel import make_estimator, rabo_local, rafbo_local
from rabo_protocol import RunConfig
from rabo_protocol.presets import DIRECTION_PART, LOCAL_OUTER_STEPS
from tasks import BilevelTask, ClientData, OutputScaler, bilevel_problem
from tasks.sampling import MinibatchSampler, seeded_generator

__all__ = ["ROOT_KEY", "ServerReference"]

Parts = Mapping[str, Mapping[str, np.ndarray]]

ROOT_KEY = 1 << 30
"""The root set's partition key in the minibatch seeds (no client's partition id reaches it)."""


class ServerReference:
    """``reference(parts, server_round)``: the server's update per reply part (full shapes).

    Args:
        task: the run's task.
        cfg: the run config (algorithm, estimator, solver, batch size, seed).
        root: the root set (``tasks.root_set``).
        device: where the server trains.
    """

    def __init__(self, task: BilevelTask, cfg: RunConfig, root: ClientData, device: torch.device) -> None:
        self.task, self.cfg, self.root, self.device = task, cfg, root, device
        self.widths = task.full_widths()

    def __call__(self, parts: Parts, server_round: int) -> dict[str, dict[str, np.ndarray]]:
        cfg, task, device = self.cfg, self.task, self.device
        model = task.build_model(self.widths).to(device)
        if cfg.scaler:
            OutputScaler(model, task.structure, self.widths)
        own = set(task.sample_params)  # the root samples' weights, in place of the clients'
        x = {k: torch.zeros(len(self.root.train), device=device) if k in own else _tensor(a, device)
             for k, a in parts["x"].items()}
        y, v = ({k: _tensor(a, device) for k, a in parts[p].items()} for p in ("y", "v"))
        solver = cfg.solver_config()
        samplers = [MinibatchSampler(
            batch, cfg.batch_size, seeded_generator(cfg.seed, server_round, ROOT_KEY, i), device)
            for i, batch in enumerate((self.root.train, self.root.val))]
        run = rafbo_local if LOCAL_OUTER_STEPS[cfg.algorithm] else rabo_local
        result = run(bilevel_problem(task, model), make_estimator(cfg.estimator, cfg), solver, x, y, v,
                     *samplers, first_step=(server_round - 1) * solver.outer_steps)
        direction = DIRECTION_PART[cfg.algorithm]
        new = {direction: result.h if direction == "h" else result.x, "y": result.y, "v": result.v}
        update: dict[str, dict[str, np.ndarray]] = {}
        for part, tensors in new.items():
            assert tensors is not None
            sent = parts["x" if part == "h" else part]
            update[part] = {k: np.zeros_like(sent[k], dtype=np.float64) if k in own else
                            t.detach().cpu().double().numpy() - (0.0 if part == "h" else sent[k])
                            for k, t in tensors.items()}
        return update


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.array(array, dtype=np.float32), device=device)
