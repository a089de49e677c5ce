"""Per-task defaults: the settings a user never has to look up.

The keys in :data:`TUNED_KEYS` are ``"auto"`` in pyproject.toml: left unset (or set to ``"auto"``)
they take the value of the run's task from :data:`TASK_DEFAULTS`, or of the strategy where
:data:`STRATEGY_DEFAULTS` says so; a value the user gives always wins. Every other key has one
global default. Where the values come from: ``benchmarks/task_defaults.py`` (one key at a time
around each task's row, 30 rounds; docs/results/task_defaults.csv and docs/results.md, "Per-task
defaults").

Why hyper-cleaning differs: its x is one logit per training sample, which gets a gradient only when
its sample is in the minibatch, so it needs outer steps about 1,000 times larger than a network's
weights; its inner problem (a linear head with mu-regularisation) needs a larger mu to be well
conditioned, and v a longer solve. With the hyper-representation values it does not learn; RAFBO's
trust region (relative to ||x||) stays off, as its x starts at 0.

Why the two networks differ (``benchmarks/label_skew.py``, docs/results.md, "Label skew"): the CNN
learns more with RAFBO's local outer steps (guarded by the trust region), and its staggered
``coverage`` windows spread the small clients' data over every unit. The MLP's single hidden
layer is the classifier's input: staggered windows there make the rows of the classes that only
small clients hold far louder than the others once the full model sums every window (when the
budgets and the classes are correlated, the full-size clients' classes are lost), and nested
``static`` windows do not; RABO is as accurate there for a third of the client compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .presets import STRATEGIES

AUTO = "auto"
TUNED_KEYS = ("algorithm", "mu", "outer-lr", "v-lr", "v-steps", "mask-policy", "outer-trust-region")
GLOBAL_TASK = "hyper-representation"
"""The task whose column is the global default (what ``RunConfig()`` and a task without a row get)."""

_NETWORK = {"mu": 1e-3, "outer-lr": 0.1, "v-lr": 0.1, "v-steps": 5, "outer-trust-region": 0.2}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "hyper-representation": {**_NETWORK, "algorithm": "rafbo", "mask-policy": "coverage"},
    "hyper-representation-mlp": {**_NETWORK, "algorithm": "rabo", "mask-policy": "static"},
    "hyper-cleaning": {"algorithm": "rafbo", "mu": 1e-2, "outer-lr": 100.0, "v-lr": 0.1, "v-steps": 10,
                       "mask-policy": "coverage", "outer-trust-region": 0.0},
}

PLUGIN = "plug-in"
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {
    # plug-in strategies average models, not hypergradients: only RAFBO replies with a model
    PLUGIN: {"algorithm": "rafbo"},
}

Source = str  # "user", "task default", "strategy default" or "global default"


def _strategy_row(strategy: object) -> dict[str, Any]:
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        return STRATEGY_DEFAULTS.get(PLUGIN, {})
    return STRATEGY_DEFAULTS.get(str(strategy), {})


def resolve(raw: Mapping[str, object], field_defaults: Mapping[str, object]
            ) -> tuple[dict[str, object], dict[str, Source]]:
    """Fill the tuned keys the user left unset or ``"auto"``; say where every key came from.

    ``raw``: the run config as given (hyphenated keys; Flower adds pyproject.toml's values to the
    user's, so a key equal to its global default is recorded as ``global default`` even when typed).
    ``field_defaults``: key -> global default, for the keys of ``raw`` that are not tuned.
    """
    values = dict(raw)
    task = raw.get("task", GLOBAL_TASK)
    task_row = TASK_DEFAULTS.get(task, TASK_DEFAULTS[GLOBAL_TASK]) if isinstance(task, str) else {}
    strategy_row = _strategy_row(raw.get("strategy", "resource-adaptive"))
    sources: dict[str, Source] = {}
    for key in TUNED_KEYS:
        if key in raw and raw[key] != AUTO:
            sources[key] = "user"
        elif key in strategy_row:
            values[key], sources[key] = strategy_row[key], "strategy default"
        elif task != GLOBAL_TASK and task_row.get(key) != TASK_DEFAULTS[GLOBAL_TASK][key]:
            values[key], sources[key] = task_row[key], "task default"
        else:
            values[key], sources[key] = task_row.get(key, TASK_DEFAULTS[GLOBAL_TASK][key]), "global default"
    for key, default in field_defaults.items():
        if key not in sources:
            sources[key] = "user" if key in raw and raw[key] != default else "global default"
    return values, sources
