"""The layout's rules, checked on the source: imports run one way, rooms stay small, no dead code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bilevel", "client_app", "deploy", "rabo_protocol", "rabo_pruning", "rabo_strategy",
            "server_app", "tasks")
MAX_MODULE_LINES = 250
MAX_CLASS_LINES = 150
NEVER_IMPORTS = {
    "client_app": {"server_app"}, "server_app": {"client_app"},
    # the shared layers sit below both apps and the strategy
    "rabo_protocol": {"client_app", "server_app", "rabo_strategy"},
    "rabo_pruning": {"client_app", "server_app", "rabo_strategy"},
    "rabo_strategy": {"client_app", "server_app"},
    "bilevel": {"client_app", "server_app", "rabo_strategy", "rabo_pruning", "rabo_protocol", "tasks",
                "flwr"},
    "tasks": {"client_app", "server_app", "rabo_strategy", "rabo_pruning", "rabo_protocol"},
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay in their package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(NEVER_IMPORTS))
def test_imports_run_one_way(package: str) -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(_imported(p) & NEVER_IMPORTS[package])
             for p in _modules(package)}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_walk_sees_an_import_across_the_apps(tmp_path: Path) -> None:
    """The check above can fail: a module importing the other app is caught, in both spellings."""
    module = tmp_path / "m.py"
    module.write_text("import server_app.app\nfrom server_app.inprocess import InProcessGrid\n"
                      "from . import x\n")
    assert _imported(module) == {"server_app"}


def test_modules_and_classes_stay_small() -> None:
    too_long = {}
    for package in PACKAGES:
        for path in _modules(package):
            text = path.read_text()
            name = str(path.relative_to(ROOT))
            if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
                too_long[name] = lines
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, ast.ClassDef):
                    continue
                if (size := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_CLASS_LINES:
                    too_long[f"{name}:{node.name}"] = size
    assert too_long == {}, f"over {MAX_MODULE_LINES} lines a module or {MAX_CLASS_LINES} a class"


def test_no_dead_code() -> None:
    """vulture finds nothing unused in the packages, beyond the uses it cannot see (framework
    hooks, public test utilities), which tests/vulture_whitelist.py lists with their reason."""
    result = subprocess.run(
        [sys.executable, "-m", "vulture", *PACKAGES, "tests/vulture_whitelist.py", "--min-confidence", "60"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the strategy/server seam
SEAM = ("rabo_strategy", "server_app")
"""The packages whose public functions pass replies between modules and to the server."""


def _public_functions(package: str) -> list[tuple[str, object]]:
    """Every public function of ``package``'s modules and every public method (``__init__`` and
    ``__call__`` too) of their public classes, by qualified name."""
    import importlib
    import inspect

    found = []
    for path in _modules(package):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value):
                found.append((f"{module.__name__}.{name}", value))
            elif inspect.isclass(value):
                found.extend((f"{module.__name__}.{name}.{attr}", member)
                             for attr, member in vars(value).items() if inspect.isfunction(member)
                             and (not attr.startswith("_") or attr in ("__init__", "__call__")))
    return found


def _positional_replies(function: object) -> dict[str, list[object]]:
    """The parameters (and ``return``) of ``function`` whose annotation holds, at any depth, a
    tuple of mixed element types that carries a reply's slices (a ``SliceIndex``): a reply's
    values and slices in a positional tuple, which nothing checks are read in the right order.
    ``tuple[T, ...]`` and tuples of one type are a sequence, not a record, and pass."""
    import typing

    from rabo_pruning.submodel import SliceIndex

    def tuples(hint: object) -> list[object]:
        args = typing.get_args(hint)
        own = [hint] if (typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis
                         and len(set(args)) > 1) else []
        return own + [t for arg in args if arg is not Ellipsis for t in tuples(arg)]

    def carries(hint: object) -> bool:
        return hint is SliceIndex or any(carries(arg) for arg in typing.get_args(hint))

    hints = typing.get_type_hints(function)
    return {name: bad for name, hint in hints.items() if (bad := [t for t in tuples(hint) if carries(t)])}


def test_no_positional_tuple_carries_a_reply_across_the_seam() -> None:
    """A reply travels between the strategy's modules and to the server as named fields
    (``ParsedReply``, ``Sliced``, ``Untrained``), never as a positional tuple."""
    found = {name: bad for package in SEAM for name, function in _public_functions(package)
             if (bad := _positional_replies(function))}
    assert found == {}


def test_the_tuple_check_sees_a_positional_reply() -> None:
    """The check above can fail: the parsed reply as it once was, a tuple (values, slices, metrics),
    is caught as a return and inside a parameter; a homogeneous tuple is not."""
    import numpy as np
    from flwr.app import MetricRecord

    from rabo_pruning.submodel import SliceIndex

    parsed = tuple[dict[str, np.ndarray], dict[str, SliceIndex], MetricRecord]

    def parse(msg: object, seen: list[tuple[int, parsed]], sizes: tuple[int, ...]) -> parsed:
        raise NotImplementedError

    parse.__annotations__ = {"msg": object, "seen": list[tuple[int, parsed]], "sizes": tuple[int, ...],
                             "return": parsed}
    assert set(_positional_replies(parse)) == {"seen", "return"}
    assert _public_functions("rabo_strategy")  # the walk finds the functions to check


def _probes(tree: ast.AST) -> list[str]:
    """``getattr``/``hasattr`` calls whose first argument is a strategy (an expression naming
    ``strategy``, or a wrapper's ``inner``), and ``__getattr__`` definitions, as source text."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args):
            target = ast.unparse(node.args[0])
            if "strategy" in target.lower() or target.split(".")[-1] == "inner":
                found.append(ast.unparse(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__":
            found.append("def __getattr__")
    return found


def test_the_server_never_probes_a_strategy() -> None:
    """server_app reads a strategy through ``rabo_strategy.contract.ServerFacing`` only: no
    attribute looked up by name on it, no attribute forwarded by ``__getattr__``."""
    found = {str(p.relative_to(ROOT)): probes for p in _modules("server_app")
             if (probes := _probes(ast.parse(p.read_text())))}
    assert found == {}


def test_the_probe_scan_sees_a_probe() -> None:
    """The scan above can fail: each way the server once reached a strategy is caught."""
    tree = ast.parse("state = getattr(strategy, 'state', dict)\n"
                     "if hasattr(self.strategy, 'load_state'): pass\n"
                     "getattr(self.inner, 'rows', ())\n"
                     "class Wrapper:\n    def __getattr__(self, name): return name\n"
                     "getattr(cfg, 'seed')\n")
    assert _probes(tree) == ["getattr(strategy, 'state', dict)", "hasattr(self.strategy, 'load_state')",
                             "getattr(self.inner, 'rows', ())", "def __getattr__"]


HISTORY = re.compile(r"\b" + "iss" + r"ues?\b", re.IGNORECASE)
"""A tracker reference ("that ticket", by its number) in source: the history belongs in git."""


def _source_files() -> list[Path]:
    skip = {".venv", ".git", "build", "dist", "results", "cache", ".deploy"}
    return [path for path in sorted(ROOT.rglob("*")) if path.suffix in {".py", ".toml", ".sh"}
            and not skip & set(path.relative_to(ROOT).parts)]


def test_code_tests_and_presets_state_rules_not_history() -> None:
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in _source_files()
             for number, line in enumerate(path.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert not found, "state the rule or contract; the history belongs in git:\n" + "\n".join(found)


def test_the_history_scan_sees_a_reference() -> None:
    assert HISTORY.search("refused since " + "iss" + "ue 12, row 5")
    assert not HISTORY.search("x509.CertificateBuilder().issuer_name(ca.subject)")
