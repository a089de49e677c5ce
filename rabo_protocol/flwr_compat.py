"""The Flower symbols this project takes from outside Flower's public API, all behind this one door.

Flower's public API is what its API reference documents: ``flwr.app``, ``flwr.clientapp`` (and
``flwr.clientapp.mod``; Flower's guide to mods imports from ``flwr.clientapp.typing``),
``flwr.serverapp``, the classes of ``flwr.serverapp.strategy`` and the functions of ``flwr.common``
(``log`` among them; import it from there, not from ``flwr.common.logger``). Everything else is
internal and may move in any minor release, and Flower ships one about every two weeks. Every
other module imports the symbols below from here (tests/test_flwr_compat.py checks that, and pins
the internals relied on by value: the error code of a raising ClientApp, the local SuperLink's
port variable and log file), so a Flower upgrade that moves one fails at import, with a message
that names the installed Flower version and the symbol, instead of deep inside a round.

Why each symbol is needed, and the public alternative that was checked:

- ``Run`` (``flwr.supercore.run``): the type in the public ``Grid`` interface (``Grid.set_run``,
  ``Grid.run``) that the in-process and metered grids implement; ``Run.create_empty`` makes the
  in-process grid's run. ``flwr.serverapp`` exports ``Grid`` but not the ``Run`` it names.
- ``TaskIdentity`` (``flwr.supercore.task_identity``): a ``Message`` built outside a running app
  (the in-process grid, tests) takes the sending task's identity from it. Flower's runtime sets it
  in its own processes; no public call does.
- ``message_to_proto`` (``flwr.common.serde``): a message's size as Flower serializes it for the
  wire (server_app/metering.py); ``Message`` has no public size or serialization.
- ``aggregate_arrayrecords`` (``flwr.serverapp.strategy.strategy_utils``): Flower's own weighted
  FedAvg average, the reference the tests hold ``CoverageAverage`` to. The public ``FedAvg``
  averages only inside ``aggregate_train`` (reply messages, a round), and the API reference does
  not list ``strategy_utils`` (a how-to guide names its sibling ``aggregate_metricrecords``).
- ``parse_config_args``, ``get_fused_config_from_dir`` (``flwr.common.config``): Flower's own
  reading of ``--run-config`` (a TOML file or ``key=value`` pairs) and its merge with
  pyproject.toml, so the conf/ presets are checked and benchmarked as ``flwr run`` sends them;
  the public API hands a run config over only inside a run (``Context.run_config``).

Re-exported for the differential-privacy module, though public: ``RdpAccountant``,
``GaussianPrivacyEvent``, ``PrivacyConfig``, ``PrivacySpent``, ``SamplingMethod`` and
``NeighboringRelation``, Flower's Renyi-DP accountant and its types. The API reference documents
them in ``flwr.serverapp`` (defined in ``flwr.supercore.privacy_accounting``, the fallback), a
recent addition, so they get the same version check. ``RdpAccountant`` needs the ``dp-accounting``
package only when it is constructed, so resolving it needs nothing more.

Each symbol is looked up on first use (PEP 562 ``__getattr__``), in its known modules, newest first,
so a symbol that one Flower version lacks breaks only the code that uses it. ``SUPPORTED`` is the
range the tests passed on (docs/deployment.md, "Flower versions"); widen it with the pin in pyproject.toml.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same symbols for type checkers and linters; at run time see __getattr__
    from flwr.common.config import get_fused_config_from_dir, parse_config_args
    from flwr.common.serde import message_to_proto
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        PrivacySpent,
        RdpAccountant,
        SamplingMethod,
    )
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
    from flwr.supercore.constant import TaskType
    from flwr.supercore.run import Run
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import LaunchResult
    from flwr.supercore.superexec.run_superexec import run_superexec
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode.runtime.run_clientapp import run_clientapp

__all__ = [
    "GaussianPrivacyEvent",
    "LaunchResult",
    "NeighboringRelation",
    "PrivacyConfig",
    "PrivacySpent",
    "RdpAccountant",
    "Run",
    "SamplingMethod",
    "SubprocessExecutor",
    "TaskIdentity",
    "TaskType",
    "aggregate_arrayrecords",
    "get_fused_config_from_dir",
    "message_to_proto",
    "parse_config_args",
    "run_clientapp",
    "run_superexec",
]

SUPPORTED = "1.40-1.42"
_PRIVACY = ("flwr.serverapp", "flwr.supercore.privacy_accounting")

# symbol -> the modules known to hold it, newest Flower first (a move adds its new home in front)
LOCATIONS: dict[str, tuple[str, ...]] = {
    "Run": ("flwr.supercore.run",),
    "TaskIdentity": ("flwr.supercore.task_identity",),
    "message_to_proto": ("flwr.common.serde",),
    "aggregate_arrayrecords": ("flwr.serverapp.strategy.strategy_utils",),
    "parse_config_args": ("flwr.common.config",),
    "get_fused_config_from_dir": ("flwr.common.config",),
    "RdpAccountant": ("flwr.serverapp", "flwr.supercore.privacy_accounting.rdp_accountant"),
    "GaussianPrivacyEvent": _PRIVACY,
    "PrivacyConfig": _PRIVACY,
    "PrivacySpent": _PRIVACY,
    "SamplingMethod": _PRIVACY,
    "NeighboringRelation": _PRIVACY,
    # deploy/warm_exec.py: Flower 1.42's SuperExec, its subprocess executor, and what a ClientApp
    # process runs
    "TaskType": ("flwr.supercore.constant",),
    "SubprocessExecutor": ("flwr.supercore.superexec.executor.subprocess_executor",),
    "LaunchResult": ("flwr.supercore.superexec.executor.types",),
    "run_superexec": ("flwr.supercore.superexec.run_superexec",),
    "run_clientapp": ("flwr.supernode.runtime.run_clientapp",),
}


def flwr_version() -> str:
    return metadata.version("flwr")


def _absent(module: str, error: ModuleNotFoundError) -> bool:
    """Whether ``error`` says ``module`` itself (or a package above it) is missing, not a dependency."""
    return error.name is not None and (module == error.name or module.startswith(f"{error.name}."))


def resolve(name: str) -> Any:
    """``name`` from the first of its known modules that has it; an ImportError that names the
    installed Flower version and the symbol when none does. A dependency missing inside a Flower
    module is re-raised as it is: that is no move."""
    for module in LOCATIONS[name]:
        try:
            return getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as error:
            if not _absent(module, error):
                raise
        except AttributeError:
            pass
    raise ImportError(f"flwr {flwr_version()}: `{LOCATIONS[name][0]}.{name}` moved; rabo-flower supports "
                      f"flwr {SUPPORTED}; see rabo_protocol/flwr_compat.py", name=name)


def __getattr__(name: str) -> Any:
    if name not in LOCATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = resolve(name)
    return value
