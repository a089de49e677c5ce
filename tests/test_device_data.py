"""Nodes that bring their own data file (node config ``data-path``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from client_app.app import app as client_app
from client_app.app import local_data
from rabo_protocol import parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tasks import device_data
from tests.fakes import FAST_CONFIG


def _write_digits(path: Path, rows: slice, shape: tuple[int, ...] = (8, 8)) -> Path:
    digits = load_digits()
    images = digits.images[rows] / 16.0
    if shape != (8, 8):
        images = np.zeros((len(images), *shape))
    np.savez(path, images=images.astype(np.float32), labels=digits.target[rows])
    return path


def test_nodes_train_on_their_own_files(tmp_path: Path) -> None:
    files = [_write_digits(tmp_path / f"node{i}.npz", slice(300 * i, 300 * (i + 1))) for i in range(4)]
    files.append(tmp_path / "missing.npz")
    (bad := tmp_path / "bad.npz").write_bytes(b"not a zip file")
    files.append(bad)
    files.append(_write_digits(tmp_path / "wrong-shape.npz", slice(0, 50), shape=(28, 28)))
    # unusable data: NaN pixels, a label the model has no class for, constant images: such nodes
    # are refused at the profile query, never sampled to fail every round
    digits = load_digits()
    images, labels = (digits.images[:60] / 16.0).astype(np.float32), digits.target[:60].copy()
    nan_images = images.copy()
    nan_images[3, 0, 0] = np.nan
    unusable = (("nan", nan_images, labels), ("label-10", images, np.where(labels == 0, 10, labels)),
                ("constant", np.zeros_like(images), labels))
    for name, imgs, labs in unusable:
        np.savez(tmp_path / f"{name}.npz", images=imgs, labels=labs)
        files.append(tmp_path / f"{name}.npz")
    config = {**FAST_CONFIG, "results-dir": str(tmp_path / "results")}
    node_configs = [{"data-path": str(f), "resource-ratio": 1.0} for f in files]
    node_configs.append({"resource-ratio": 1.0})  # neither data-path nor partition
    grid = InProcessGrid(client_app, len(node_configs), config, node_configs=node_configs, partitioned=False)
    run_dir = run(grid, parse_run_config(config))
    nodes = json.loads((run_dir / "summary.json").read_text())["nodes"]
    assert len(nodes) == 4  # every unusable node left out at the profile query, with its reason
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert all(r["replies"] == 4 and r["failed-replies"] == 0 for r in rows[1:])
    assert rows[-1]["test-accuracy"] > rows[0]["test-accuracy"] + 0.2


def test_device_data_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data-path='.*nothing.npz' is not a file"):
        device_data(str(tmp_path / "nothing.npz"), 0.5, 0)
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="must be an .npz with arrays 'images' and 'labels'"):
        device_data(str(tmp_path / "nolabels.npz"), 0.5, 0)
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((4, 8, 8)), labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\)"):
        device_data(str(tmp_path / "mismatch.npz"), 0.5, 0)
    path = _write_digits(tmp_path / "ok.npz", slice(0, 100))
    whole, share = device_data(str(path), 0.5, 0), device_data(str(path), 0.5, 0, 1, 4)
    assert len(whole.train) + len(whole.val) == 100 and len(share.train) + len(share.val) == 25


def test_an_edge_node_with_its_own_data_imports_no_dataset_libraries(tmp_path: Path) -> None:
    """A node that trains on its own .npz imports neither flwr-datasets nor what it brings (HF
    datasets, pandas, pyarrow, seaborn: seconds of import on a small device)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "own.npz", images=rng.random((40, 8, 8)).astype(np.float32),
             labels=np.arange(40) % 10)
    code = ("import sys\nimport client_app.app\nfrom tasks import device_data\n"
            f"data = device_data({str(tmp_path / 'own.npz')!r}, 0.5, 0)\n"
            "heavy = [m for m in ('datasets', 'pandas', 'pyarrow', 'flwr_datasets', 'seaborn', "
            "'matplotlib') if m in sys.modules]\nprint(len(data.train), heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.split(" ", 1)[1].strip() == "[]", out.stdout


def test_a_nodes_own_data_is_standardised_like_the_servers_test_set(tmp_path: Path) -> None:
    """A node's file is standardised with the run dataset's mean and std, which the server sends with
    the input shape, never by its own statistics: a node holding only bright digits feeds the
    model inputs on the scale of the server's test set."""
    from flwr.app import ConfigRecord

    from rabo_protocol import parse_node_config
    from server_app.strategies import build_strategy
    from tasks import image_data, make_task

    digits = load_digits()
    eights = digits.target == 8  # one class only: its own mean and std differ from the dataset's
    np.savez(tmp_path / "eights.npz", images=(digits.images[eights] / 16.0).astype(np.float32),
             labels=digits.target[eights])
    cfg = parse_run_config({**FAST_CONFIG, "algorithm": "rafbo"})
    norm = image_data(cfg.data_spec(num_partitions=1)).normalization
    for strategy in ("resource-adaptive", "flwr:FedAvg"):
        strategy_cfg = parse_run_config({**FAST_CONFIG, "algorithm": "rafbo", "strategy": strategy})
        built = build_strategy(strategy_cfg, make_task(cfg.task, cfg.data_spec(1), cfg.mu))
        assert built.client_config["input-mean"] == norm.mean and built.client_config["input-std"] == norm.std
    node = parse_node_config({"data-path": str(tmp_path / "eights.npz")})
    sent = ConfigRecord({"input-mean": norm.mean, "input-std": norm.std})
    data = local_data(cfg, node, sent)
    pixels = (digits.images[eights] / 16.0).astype(np.float32)
    expected = (pixels - norm.mean) / norm.std
    got = torch.cat([data.train.inputs, data.val.inputs]).flatten().sort().values
    assert torch.allclose(got, torch.as_tensor(np.sort(expected.ravel())), atol=1e-5)
    assert abs(float(got.mean())) > 0.02  # not re-centred on the node's own mean (that gives 0)
    # a plug-in's messages carry them too (server_app/validation.py); without them the node says so
    with pytest.raises(ValueError, match="input-mean"):
        local_data(cfg, node, ConfigRecord())
