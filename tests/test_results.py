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


def test_the_run_plot_is_readable(tmp_path: Path) -> None:
    """The whole run name fits, the 90 % line has a label, C_y* is drawn wider under C_x* so equal
    values both show, and 3 rounds get integer ticks."""
    from PIL import Image

    from server_app.plots import figure, short_title
    from server_app.results import plot

    name = "20261202-150000-hyper-representation-resource-adaptive-rabo-coverage-finite-difference-seed0"
    rows = [{"round": 0, "test-accuracy": 0.1}] + [
        {"round": r, "test-accuracy": 0.3 * r, "coverage-x-min": 2, "coverage-y-min": 2, "replies": 4,
         "failed-replies": 0} for r in (1, 2, 3)]
    wrapped = short_title(name)
    assert wrapped.replace("\n", "") == name and max(map(len, wrapped.split("\n"))) <= 48
    fig = figure(rows, name)
    accuracy, coverage, by_time = fig.axes
    assert all(float(t).is_integer() for ax in (accuracy, coverage) for t in ax.get_xticks())
    assert by_time.get_xlabel() == "wall-clock seconds"
    simulated = [{**r, "simulated-seconds": 2.5} for r in rows[1:]]
    assert list(figure([rows[0], *simulated], name).axes[2].get_lines()[0].get_xdata()) == [0, 2.5, 5, 7.5]
    assert "90% target" in [t.get_text() for t in accuracy.get_legend().get_texts()]
    lines = {line.get_label(): line for line in coverage.get_lines()}
    assert lines["C_y*"].get_linewidth() > lines["C_x*"].get_linewidth()  # drawn under, wider
    plot(tmp_path / "plot.png", rows, name)
    assert Image.open(tmp_path / "plot.png").info["Title"] == name
