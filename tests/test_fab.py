"""The Flower App Bundle: ``flwr build`` packs what a SuperLink needs, and it installs and runs in a
fresh virtualenv, away from this checkout.

The fresh virtualenv reaches this environment's installed dependencies through a ``.pth`` file
(installing torch again would take minutes and gigabytes), and installs the FAB itself with
``pip install --no-deps``: what is tested is the FAB's own files and metadata. ``pip check`` then
confirms that the dependencies the FAB declares are satisfied.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml  # a Flower dependency

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bilevel", "client_app", "rabo_protocol", "rabo_pruning", "rabo_strategy", "server_app", "tasks")

RUN_FROM_FAB = """
import json, sys, tomllib
from pathlib import Path
import server_app
assert Path(server_app.__file__).is_relative_to(sys.prefix), server_app.__file__
from client_app.app import app
from rabo_protocol import parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
defaults = tomllib.loads(Path(sys.argv[1]).read_text())["tool"]["flwr"]["app"]["config"]
keys = {**defaults, "dataset": "sklearn-digits", "num-server-rounds": 2, "inner-steps": 2,
        "v-steps": 2, "outer-steps": 1, "profile": False, "results-dir": sys.argv[2]}
run_dir = run(InProcessGrid(app, 4, keys), parse_run_config(keys))
print(json.loads((run_dir / "metrics.json").read_text())[-1]["test-accuracy"])
"""


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("flwr") is None:
        pytest.skip("the flwr CLI is not on PATH")
    out = tmp_path_factory.mktemp("fab")
    subprocess.run(["flwr", "build", "--app", str(ROOT)], cwd=out, check=True, capture_output=True,
                   timeout=120)
    (path,) = out.glob("*.fab")
    return path


def test_the_fab_holds_the_app_its_metadata_and_nothing_else(fab: Path) -> None:
    names = set(zipfile.ZipFile(fab).namelist())
    assert {"pyproject.toml", "README.md", "LICENSE"} <= names
    for package in PACKAGES:
        modules = {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")
                   if "__pycache__" not in p.parts}
        assert modules <= names, sorted(modules - names)
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/", "deploy/", "conf/")) for name in names)
    assert "rabo_protocol/devices.toml" in names


@pytest.mark.e2e
def test_the_fab_installs_and_runs_in_a_fresh_virtualenv(fab: Path, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    zipfile.ZipFile(fab).extractall(app_dir)
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)  # this environment's pip installs into it (``--python``)
    python = str(env / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    pip = [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(app_dir)], check=True, capture_output=True,
                   timeout=300)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    missing = [line for line in check.stdout.splitlines() if "rabo-flower" in line.lower()]
    assert not missing, missing
    metadata = subprocess.run([python, "-c", "from importlib.metadata import metadata as m; "
                               "d = m('rabo-flower'); print(d['Requires-Python'], d['License-Expression'])"],
                              check=True, capture_output=True, text=True).stdout.split()
    assert metadata == [tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"],
                        "Apache-2.0"]

    result = subprocess.run([python, "-c", RUN_FROM_FAB, str(app_dir / "pyproject.toml"),
                             str(tmp_path / "results")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PATH": str(env / "bin"), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split()[-1]) > 0.1  # better than chance after 2 rounds: a real run


def test_the_project_metadata_matches_flower_and_the_citation() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # flwr >= 1.31 requires Python 3.11
    assert "Python 3.11+" in (ROOT / "README.md").read_text()
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == project["version"]
    assert citation["license"] == project["license"]
    assert citation["preferred-citation"]["identifiers"][0]["value"] == "10.48550/arXiv.2512.24667"
