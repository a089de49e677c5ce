"""Per-task defaults: the settings a user never has to look up.

The keys in :data:`TUNED_KEYS` are ``"auto"`` in pyproject.toml: left unset (or set to ``"auto"``)
they take the value of the run's task, or of the strategy where :data:`STRATEGY_DEFAULTS` says so;
a value the user gives always wins. Every other key has one global default. Each task declares its
values where it is registered (``tasks.registry.TASKS``, which also says why they differ): the
default task's row names every tuned key and is the global default, the others list where they
differ. A task without a row (a plug-in) takes the global row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks import DEFAULT_TASK, TASKS

from .presets import STRATEGIES

AUTO = "auto"
GLOBAL_TASK = DEFAULT_TASK
"""The task whose row is the global default (what ``RunConfig()`` and a task without a row get)."""
_GLOBAL_ROW: dict[str, Any] = dict(TASKS[GLOBAL_TASK].defaults)
TUNED_KEYS = tuple(_GLOBAL_ROW)
TASK_DEFAULTS: dict[str, dict[str, Any]] = {name: {**_GLOBAL_ROW, **entry.defaults}
                                            for name, entry in TASKS.items()}
"""Every built-in task's full row of tuned values."""

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
    ``field_defaults``: key -> global default, for the keys that are not tuned.
    """
    values = dict(raw)
    task = raw.get("task", field_defaults["task"])
    task_row = TASK_DEFAULTS.get(task, _GLOBAL_ROW) if isinstance(task, str) else _GLOBAL_ROW
    strategy_row = _strategy_row(raw.get("strategy", field_defaults["strategy"]))
    sources: dict[str, Source] = {}
    for key in TUNED_KEYS:
        if key in raw and raw[key] != AUTO:
            sources[key] = "user"
        elif key in strategy_row:
            values[key], sources[key] = strategy_row[key], "strategy default"
        elif task != GLOBAL_TASK and task_row.get(key) != _GLOBAL_ROW[key]:
            values[key], sources[key] = task_row[key], "task default"
        else:
            values[key], sources[key] = task_row.get(key, _GLOBAL_ROW[key]), "global default"
    for key, default in field_defaults.items():
        if key not in sources:
            sources[key] = "user" if key in raw and raw[key] != default else "global default"
    return values, sources
