"""Results are written atomically and can be read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from server_app.results import atomic_write, save_model, write_json


def test_a_crash_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"round": 1})

    def crash(handle) -> None:
        handle.write(b'{"round": 2, "trunc')
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"round": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_model_file_loads_with_weights_only(tmp_path: Path) -> None:
    parts = {"x": {"w": np.ones((2, 3), dtype=np.float32)}, "y": {"b": np.zeros(2, dtype=np.float32)}}
    save_model(tmp_path / "model.pt", parts, {"fc": 3}, {"algorithm": "rabo", "seed": 0})
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(loaded["parts"]["x"]["w"], torch.ones(2, 3))
    assert loaded["widths"] == {"fc": 3} and loaded["config"]["algorithm"] == "rabo"
