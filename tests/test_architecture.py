"""The layout's rules, checked on the source: imports run one way, rooms stay small, no dead code."""

from __future__ import annotations

import ast
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
