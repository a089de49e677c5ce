"""Experiment trackers: metrics per round where researchers look."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client_app.app import app as client_app
from rabo_protocol import ConfigError, parse_run_config
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG


def test_tensorboard_gets_every_metric_of_every_round_and_the_config(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = {**FAST_CONFIG, "num-server-rounds": 2, "results-dir": str(tmp_path), "loggers": "tensorboard"}
    run_dir = run(InProcessGrid(client_app, 4, config), parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    accuracy = [(e.step, e.value) for e in events.Scalars("test-accuracy")]
    assert accuracy == [(r["round"], pytest.approx(r["test-accuracy"], rel=1e-6)) for r in rows]
    assert [e.value for e in events.Scalars("coverage-x-min")] == [r["coverage-x-min"] for r in rows[1:]]
    assert {"failed-replies", "bytes-up", "elapsed-seconds"} <= set(events.Tags()["scalars"])
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"loggers": "tensorboard"' in text and '"mask-policy": "coverage"' in text


def test_a_tracker_that_is_not_installed_or_unknown_is_one_message(tmp_path: Path) -> None:
    import importlib.util

    with pytest.raises(ConfigError, match=r"'loggers' = 'neptune': Input should be 'tensorboard', "
                                          r"'wandb' or 'mlflow'"):
        parse_run_config({"loggers": "neptune"})
    if importlib.util.find_spec("wandb") is None:
        config = {**FAST_CONFIG, "num-server-rounds": 1, "results-dir": str(tmp_path), "loggers": "wandb"}
        with pytest.raises(ConfigError, match=r"wandb not installed on the server \(pip install wandb\)"):
            run(InProcessGrid(client_app, 2, config), parse_run_config(config))


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_the_optional_trackers_log_offline(tmp_path: Path, tracker: str) -> None:
    """W&B offline and MLflow's local SQLite store (extras `.[wandb]`, `.[mlflow]`: skipped
    where they are not installed, as in CI; run here with wandb 0.31.0 and mlflow 3.18.0)."""
    pytest.importorskip(tracker)
    from server_app.trackers import BUILDERS

    rows = [{"round": 0, "test-accuracy": 0.1}, {"round": 1, "test-accuracy": 0.5, "replies": 4}]
    logger = BUILDERS[tracker](tmp_path, "a-run", {"seed": 0, "mask-policy": "coverage"})
    for row in rows:
        logger.log_round(int(row["round"]), row)
    logger.close()
    if tracker == "mlflow":
        import mlflow

        from server_app.trackers import tracking_uri

        client = mlflow.MlflowClient(tracking_uri=tracking_uri(tmp_path))
        (run,) = client.search_runs([client.get_experiment_by_name("rabo").experiment_id])
        history = client.get_metric_history(run.info.run_id, "test-accuracy")
        assert [(m.step, m.value) for m in history] == [(0, 0.1), (1, 0.5)]
        assert run.data.params["mask-policy"] == "coverage"
    else:
        (offline,) = (tmp_path / "wandb").glob("offline-run-*")
        assert list(offline.glob("*.wandb"))
