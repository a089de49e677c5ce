"""The README's own-task example, exactly as printed there, runs: two in-process rounds."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def my_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    block = re.search(r"<!-- readme-task -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None and len(block.group(1).splitlines()) <= 40
    (tmp_path / "my_task.py").write_text(block.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_task:task"
    sys.modules.pop("my_task", None)


def test_the_readme_task_trains(tmp_path: Path, my_task: str) -> None:
    run_config = {**FAST_CONFIG, "results-dir": str(tmp_path), "task": my_task, "num-server-rounds": 2}
    rows = json.loads((run(InProcessGrid(client_app, 4, run_config), parse_run_config(run_config))
                       / "metrics.json").read_text())
    assert all(r["replies"] == 4 and r["failed-replies"] == 0 for r in rows[1:])
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.2
