"""benchmarks/ is a package with an index: every script is in benchmarks/README.md with its run
times, every helper is marked as one, and no module edits ``sys.path`` or imports a sibling by its
bare name (the scripts run as ``python -m benchmarks.<name>``)."""

from __future__ import annotations

import ast
import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MODULES = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "__init__.py")
TIME = re.compile(r"\d+(\.\d+)? ?(s|min|h)\b|not measured")


def _is_script(path: Path) -> bool:
    """A script runs something under ``if __name__ == "__main__":``; a helper only defines."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in ast.parse(path.read_text()).body)


def _table(section: str) -> dict[str, list[str]]:
    """The rows of the table under ``## <section>`` in the index: first cell (unquoted) -> cells."""
    text = (BENCHMARKS / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) > 1:
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_script_is_in_the_index_with_its_command_and_run_times() -> None:
    scripts = _table("Scripts")
    assert sorted(scripts) == sorted(p.stem for p in MODULES if _is_script(p))
    for name, (_, measures, command, quick, full, section) in scripts.items():
        assert measures and section, name
        assert f"`python -m benchmarks.{name}" in command, name
        assert TIME.search(full), f"{name}: no run time"
        assert TIME.search(quick) or quick == "no `--quick`", f"{name}: no --quick time"
        has_quick = "--quick" in (BENCHMARKS / f"{name}.py").read_text()
        assert (quick != "no `--quick`") == has_quick, f"{name}: --quick in the index and the script differ"


def test_every_helper_is_marked_as_one() -> None:
    assert sorted(_table("Helpers (not scripts)")) == sorted(p.stem for p in MODULES if not _is_script(p))


def _path_edits_and_bare_imports(path: Path) -> list[str]:
    siblings = {p.stem for p in BENCHMARKS.glob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            found.append(f"line {node.lineno}: sys.path")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in siblings]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in siblings:
            found.append(f"line {node.lineno}: from {node.module} import")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_benchmark_edits_sys_path_or_imports_a_sibling_by_its_bare_name(path: Path) -> None:
    assert _path_edits_and_bare_imports(path) == []
    assert "python benchmarks/" not in path.read_text()  # the commands it prints run as modules


def test_the_scan_sees_a_path_edit_and_a_bare_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import sys\nimport common\nfrom vocab import TASKS\nsys.path.insert(0, '.')\n"
                      "from benchmarks.common import preset\n")
    assert _path_edits_and_bare_imports(module) == [
        "line 2: import common", "line 3: from vocab import", "line 4: sys.path"]


def test_the_app_never_imports_the_benchmarks() -> None:
    """Imports run one way: the benchmarks use the app, the app (what the FAB ships) never them."""
    app = ("bilevel", "client_app", "rabo_protocol", "rabo_pruning", "rabo_strategy", "server_app", "tasks")
    wrong = []
    for path in (p for package in app for p in sorted((ROOT / package).rglob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            wrong += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert wrong == []


@pytest.mark.parametrize("name", ["common", "vocab"])
def test_the_examples_in_the_shared_modules_run(name: str) -> None:
    import importlib

    result = doctest.testmod(importlib.import_module(f"benchmarks.{name}"))
    assert result.attempted > 0 and result.failed == 0
