"""Uses vulture cannot see (tests/test_architecture.py::test_no_dead_code): framework hooks called
by name, and the public utilities whose callers are the tests and benchmarks."""

# ruff: noqa: B018
from bilevel.estimators.aid import AIDKnobs
from bilevel.estimators.base import Knobs
from bilevel.estimators.f2sa import F2SAKnobs
from rabo_protocol.config import RunConfig
from rabo_protocol.keys import OutputKeys, RoundKeys, TaskKeys
from rabo_protocol.node import NodeConfig
from rabo_protocol.privacy import PrivacyKeys
from rabo_protocol.time_keys import TimeKeys
from rabo_pruning.coverage_reference import optimum
from rabo_pruning.placement import Placement
from server_app.inprocess import InProcessGrid
from tasks.base import OutputScaler
from tasks.hyper_cleaning import HyperCleaning
from tasks.hyper_representation import HyperRepresentation

# pydantic: model settings and validators, found by their decorators
Knobs.model_config, RunConfig.model_config, NodeConfig.model_config
AIDKnobs._cg_needs_one_matrix, F2SAKnobs._max_at_least_first
RunConfig._task_defaults, RunConfig._check_strategy, RunConfig._check_combinations
RoundKeys._parse_levels, RoundKeys._check_levels, RoundKeys._check_reference, OutputKeys._parse_loggers
TimeKeys._parse_classes, TimeKeys._check_clock, TimeKeys._seconds_or_name
NodeConfig._ratio_or_auto, NodeConfig._partition_in_range, TaskKeys._check_task
PrivacyKeys._check_privacy
# torch: nn.Module.forward is called by Module.__call__; numpy: flags.writeable is set, not read
HyperCleaning.forward, HyperRepresentation.forward
_.forward, _.writeable  # noqa: F821 - vulture matches attribute names on any object
# torch modules read these attributes in their forward (a layer replaced, batch statistics on)
_.fc, _.maxpool, _.conv_proj, _.heads, _.track_running_stats  # noqa: F821
_.running_mean, _.running_var, _.num_batches_tracked  # noqa: F821
# Flower: the Grid protocol's task identity, set for messages built outside a running app
_.task_id  # noqa: F821
# Flower: the SuperExec calls its executor's reconcile() at every pass (deploy/warm_exec.py)
_.reconcile  # noqa: F821
# Python: a module's __getattr__ (PEP 562) serves rabo_protocol/flwr_compat.py's lazy symbols
_.__getattr__  # noqa: F821
# public utilities for tests and benchmarks: the in-process grid, the exact placement optimum,
# a placement's score, whether a scaler is installed
InProcessGrid, optimum, Placement.coverage, OutputScaler.active
