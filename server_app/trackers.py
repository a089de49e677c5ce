"""Experiment trackers, the run config's ``loggers``: every round's metrics where researchers look.

``tensorboard`` (installed with the app, offline): event files in ``<run dir>/tensorboard``, one
scalar per metric per round (``tensorboard --logdir results``), the run config as hyperparameters
and as text. ``wandb`` (``pip install wandb``) logs offline into ``<run dir>/wandb`` (``wandb
sync`` uploads it later); ``mlflow`` (``pip install mlflow``) into the SQLite store
``<run dir>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<run dir>/mlflow.db``). The
metrics files of the run directory are written either way.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Tracker(Protocol):
    def log_round(self, server_round: int, metrics: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers (round and time are the x axis, not scalars)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k not in ("round",)}


def missing_packages(names: Sequence[str]) -> list[str]:
    """The trackers in ``names`` whose package is not installed."""
    return [n for n in names if importlib.util.find_spec(PACKAGES[n]) is None]


class TensorBoard:
    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        params = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        for summary in hparams(params, {"test-accuracy": 0.0}):  # the HPARAMS tab of this run
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", f"```\n{json.dumps(dict(config), indent=1, default=str)}\n```")
        self.name = name

    def log_round(self, server_round: int, metrics: Mapping[str, Any]) -> None:
        for key, value in scalars(metrics).items():
            self.writer.add_scalar(key, value, global_step=server_round)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        import wandb

        self.run = wandb.init(mode="offline", dir=str(run_dir), name=name, config=dict(config))

    def log_round(self, server_round: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(scalars(metrics), step=server_round)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri(run_dir))
        experiment = self.client.create_experiment("rabo")
        self.run_id = self.client.create_run(experiment, run_name=name).info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def log_round(self, server_round: int, metrics: Mapping[str, Any]) -> None:
        for key, value in scalars(metrics).items():
            self.client.log_metric(self.run_id, key, value, step=server_round)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def tracking_uri(run_dir: Path) -> str:
    """MLflow's store for a run: a SQLite file (MLflow 3 refuses its old file store)."""
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


BUILDERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class Trackers:
    """The run's trackers, called together."""

    def __init__(self, names: Sequence[str], run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        self.trackers: list[Tracker] = [BUILDERS[n](run_dir, name, config) for n in names]

    def log_round(self, server_round: int, metrics: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_round(server_round, metrics)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
