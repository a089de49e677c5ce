"""Flower's internals, pinned: every symbol from outside Flower's public API resolves through
rabo_protocol/flwr_compat.py with the shape this project uses, a moved one fails with a message
that names the Flower version and the symbol, and no other module imports Flower's internals."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from rabo_protocol import flwr_compat
from rabo_protocol.flwr_compat import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    RdpAccountant,
    Run,
    SamplingMethod,
    TaskIdentity,
    aggregate_arrayrecords,
    get_fused_config_from_dir,
    message_to_proto,
    parse_config_args,
)
from server_app.inprocess import CLIENT_APP_ERROR

ROOT = Path(__file__).resolve().parents[1]
VERSION = flwr_compat.flwr_version()
# Flower's public API: the modules its API reference documents, plus flwr.clientapp.typing, which
# Flower's own guide to mods imports ClientAppCallable from.
PUBLIC = {"flwr.app", "flwr.clientapp", "flwr.clientapp.mod", "flwr.clientapp.typing", "flwr.common",
          "flwr.serverapp", "flwr.serverapp.strategy"}
SOURCES = ("bilevel", "benchmarks", "client_app", "deploy", "rabo_protocol", "rabo_pruning", "rabo_strategy",
           "server_app", "tasks", "tests")


def test_the_module_lists_each_symbol_once_with_its_known_homes() -> None:
    assert sorted(flwr_compat.__all__) == sorted(flwr_compat.LOCATIONS)


@pytest.mark.parametrize("name", flwr_compat.__all__)
def test_each_symbol_resolves_in_the_installed_flower(name: str) -> None:
    assert flwr_compat.resolve(name) is getattr(flwr_compat, name)


def test_run_is_the_type_the_public_grid_interface_names() -> None:
    assert typing.get_type_hints(Grid.set_run)["run"] is Run
    assert Run.create_empty(7).run_id == 7


def test_a_message_built_outside_an_app_takes_its_run_from_the_task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 42, 1, 1
    assert (TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id) == (42, 1, 1)
    assert Message(RecordDict(), dst_node_id=5, message_type="train").metadata.run_id == 42


def test_message_to_proto_sizes_a_message_by_its_content() -> None:
    def size(n: int) -> int:
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(n, dtype=np.float32))})})
        return int(message_to_proto(Message(content, dst_node_id=5, message_type="train")).ByteSize())

    assert size(1000) - size(0) >= 4000


def test_aggregate_arrayrecords_is_a_weighted_mean_by_the_named_metric() -> None:
    replies = [RecordDict({"arrays": ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))}),
                           "metrics": MetricRecord({"num-examples": weight})})
               for value, weight in ((1.0, 1), (5.0, 3))]
    np.testing.assert_allclose(aggregate_arrayrecords(replies, "num-examples")["w"].numpy(), [4.0] * 3)


def test_flowers_run_config_parser_reads_a_toml_file_or_pairs_over_pyproject(tmp_path: Path) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text('mu = 0.5\nstrategy = "fedavg"\n')
    assert parse_config_args([str(preset)]) == {"mu": 0.5, "strategy": "fedavg"}
    assert parse_config_args(["seed=3", 'strategy="fedavg"']) == {"seed": 3, "strategy": "fedavg"}
    fused = get_fused_config_from_dir(ROOT, {"seed": 3, "strategy": "fedavg"})
    assert (fused["seed"], fused["strategy"], fused["task"]) == (3, "fedavg", "hyper-representation")


def test_the_privacy_types_keep_the_fields_and_members_the_dp_module_uses() -> None:
    fields = {cls: [f.name for f in dataclasses.fields(cls)] for cls in (PrivacyConfig, GaussianPrivacyEvent)}
    assert fields[PrivacyConfig][:4] == ["target_delta", "population_size", "neighboring_relation",
                                         "sampling_method"]  # built positionally
    assert fields[GaussianPrivacyEvent] == ["noise_multiplier", "sample_size", "population_size"]
    assert {"epsilon", "delta"} <= {f.name for f in dataclasses.fields(PrivacySpent)}
    assert {m.name for m in SamplingMethod} >= {"POISSON", "WITHOUT_REPLACEMENT", "NO_AMPLIFICATION"}
    assert {m.name for m in NeighboringRelation} >= {"ADD_OR_REMOVE_ONE", "REPLACE_ONE"}
    used = {"__init__": ["config"], "compose": ["event", "count"], "get_epsilon": ["delta"],
            "state_dict": [], "load_state_dict": ["state"]}  # dp-accounting is loaded on construction
    assert {name: list(inspect.signature(getattr(RdpAccountant, name)).parameters)[1:len(params) + 1]
            for name, params in used.items()} == used


def _moved(monkeypatch: pytest.MonkeyPatch, lookup: typing.Callable[[str], types.ModuleType]) -> str:
    """The message of ``from rabo_protocol.flwr_compat import Run`` on a flwr 1.43.0 whose modules
    are looked up by ``lookup``."""
    monkeypatch.setattr(flwr_compat, "flwr_version", lambda: "1.43.0")
    monkeypatch.setattr(flwr_compat.importlib, "import_module", lookup)
    monkeypatch.delitem(vars(flwr_compat), "Run", raising=False)  # resolved again, not cached
    with pytest.raises(ImportError) as raised:
        exec("from rabo_protocol.flwr_compat import Run", {})
    return str(raised.value)


MOVED = ("flwr 1.43.0: `flwr.supercore.run.Run` moved; rabo-flower supports flwr 1.40-1.42; "
         "see rabo_protocol/flwr_compat.py")


def test_a_symbol_whose_module_is_gone_names_the_version_and_the_symbol(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def lookup(module: str) -> types.ModuleType:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    assert _moved(monkeypatch, lookup) == MOVED


def test_a_symbol_gone_from_its_module_names_the_version_and_the_symbol(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _moved(monkeypatch, types.ModuleType) == MOVED


def test_a_symbol_is_found_in_a_later_known_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(flwr_compat.LOCATIONS, "Run", ("flwr.supercore.no_such_module", "flwr.supercore.run"))
    assert flwr_compat.resolve("Run") is Run


def test_a_dependency_missing_inside_flower_is_no_move(monkeypatch: pytest.MonkeyPatch) -> None:
    def lookup(module: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'dp_accounting'", name="dp_accounting")

    monkeypatch.setattr(flwr_compat.importlib, "import_module", lookup)
    with pytest.raises(ModuleNotFoundError, match="dp_accounting"):
        flwr_compat.resolve("RdpAccountant")


def test_the_supported_range_is_the_pin_and_holds_the_installed_flower() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"flwr\[simulation\]>=(\d+)\.(\d+),<(\d+)\.(\d+)"', pyproject)
    assert pin, "pyproject.toml pins flwr[simulation] as >=X.Y,<X.Z"
    low, high = (int(pin[1]), int(pin[2])), (int(pin[3]), int(pin[4]))
    tested = f"{low[0]}.{low[1]}-{high[0]}.{high[1] - 1}"
    assert tested == flwr_compat.SUPPORTED
    assert low <= tuple(int(part) for part in VERSION.split(".")[:2]) < high


def _private_flower_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                 else [])
        found += [name for name in names if name.split(".")[0] == "flwr" and name not in PUBLIC]
    return found


def test_no_module_but_the_compat_module_imports_flower_internals() -> None:
    paths = [path for package in SOURCES for path in sorted((ROOT / package).rglob("*.py"))
             if path.name != "flwr_compat.py"]
    private = {str(p.relative_to(ROOT)): found for p in paths if (found := _private_flower_imports(p))}
    assert private == {}, "import these from rabo_protocol.flwr_compat (or Flower's public API)"


def test_the_walk_sees_a_private_flower_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import flwr.proto.node_pb2\nfrom flwr.supercore.run import Run\n"
                      "from flwr.app import Message\nfrom flwr_datasets.partitioner import IidPartitioner\n")
    assert _private_flower_imports(module) == ["flwr.proto.node_pb2", "flwr.supercore.run"]


def test_the_flower_internals_relied_on_by_value_still_hold(tmp_path: Path) -> None:
    """Not imports, but values: the in-process grid's error code for a raising ClientApp, and the
    local SuperLink's port variable and log file under FLWR_HOME, which tests/test_flwr_run.py and
    benchmarks/flwr_cli.py set and stop it by."""
    probe = ("from flwr.common.constant import ErrorCode\n"
             "from flwr.cli import constant, local_superlink\n"
             "print(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, constant.LOCAL_SUPERLINK_HTTP_API_PORT,"
             " local_superlink._get_local_superlink_paths()[1])")
    env = {**os.environ, "FLWR_HOME": str(tmp_path), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": "12345"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"flwr {VERSION}: {out.stderr}"
    code, port, log_file = out.stdout.split()
    assert (int(code), port) == (CLIENT_APP_ERROR, "12345"), f"flwr {VERSION}"
    assert Path(log_file).is_relative_to(tmp_path), f"flwr {VERSION}: the local SuperLink logs to {log_file}"
