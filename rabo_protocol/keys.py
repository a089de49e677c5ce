"""Groups of run-config keys that the run config inherits: where the data comes from, where the
results go. (The estimators' keys come from their own modules, ``bilevel.EstimatorKnobs``.)"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from rabo_pruning.aggregation import Aggregation, HeadRows
from rabo_pruning.coverage import Objective
from rabo_pruning.masks import CoveragePolicy, MaskPolicyName
from tasks import DEFAULT_TASK, TASKS, DataSpec
from tasks.datasets import DatasetName
from tasks.disk_cache import DEFAULT_DATA_DIR
from tasks.network import NormStats
from tasks.partitioners import PartitionerName

from .parsing import PathStr
from .presets import Capacity

PLUGIN_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
"""``package.module:name``: a plug-in strategy or task."""

ScreenReference = Literal["peers", "server", "both"]
"""What the agreement screen judges a reply against (rabo_strategy/screen.py)."""

# sane upper bounds: a typo of a few orders of magnitude is an error, not a run that never ends
Steps = Annotated[int, Field(ge=1, le=100_000)]
Rate = Annotated[float, Field(gt=0, le=1e6)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
_DATA = DataSpec()
"""The library's data defaults (``tasks.DataSpec``), which the data keys share."""


class DataKeys(BaseModel):
    """The dataset, how it is split into train/val/test and partitions, and its label noise.

    The allowed datasets and partitioners are those registered in ``tasks.datasets.DATASETS`` and
    ``tasks.partitioners.PARTITIONERS``; the defaults are :class:`~tasks.DataSpec`'s (but data-dir)."""

    dataset: DatasetName = _DATA.dataset
    data_dir: PathStr = DEFAULT_DATA_DIR
    download: bool = _DATA.download
    partitioner: PartitionerName = _DATA.partitioner
    dirichlet_alpha: Rate = _DATA.dirichlet_alpha
    shards_per_client: Steps = _DATA.shards_per_client
    budget_correlation: Annotated[float, Field(ge=0, le=1)] = _DATA.budget_correlation
    test_fraction: Fraction = _DATA.test_fraction
    val_fraction: Fraction = _DATA.val_fraction
    label_noise: Annotated[float, Field(ge=0, lt=1)] = _DATA.label_noise


class RoundKeys(BaseModel):
    """Who trains at which ratio with which mask, and which replies count."""

    ratio_levels: tuple[float, ...] = _DATA.ratio_levels
    mask_policy: MaskPolicyName  # tuned: the task's default (tasks/registry.py)
    distill_weight: Annotated[float, Field(ge=0, le=100)] = 0.0
    """Nested mask policies: lambda of the self-distillation term (client_app/nested.py)."""
    own_width_share: Literal["uniform"] | Annotated[float, Field(gt=0, le=1)] = "uniform"
    """Nested mask policies: the probability that a local outer step trains the client's own width
    (the other steps draw one of the smaller levels uniformly); 'uniform': every width that fits
    equally likely (FjORD)."""
    coverage_objective: Objective = CoveragePolicy.objective
    capacity: Capacity = "fixed"
    fraction_train: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_train_nodes: PositiveInt = 2
    min_available_nodes: PositiveInt = 2
    round_timeout: Annotated[float, Field(gt=0, le=7 * 86_400)] = 600.0
    min_successful_replies: PositiveInt = 1
    max_idle_rounds: Annotated[int, Field(ge=0, le=1_000_000)] = 10
    """The run stops after this many rounds in a row that left the global model unchanged (no
    valid reply, or too few: ``min-successful-replies``); 0: never."""
    max_update_norm: PositiveFloat = 1000.0
    max_update_norm_ratio: Annotated[float, Field(ge=0, le=1e6)] = 10.0
    min_agreement: Annotated[float, Field(ge=-1, lt=1)] = -0.1
    clip_factor: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    root_size: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    """Samples of the server's root set: the server trains a reference update on them each round
    (server_app/reference.py; used by screen-reference 'server' and 'both')."""
    screen_reference: ScreenReference = "both"
    """What the agreement screen judges a reply against: the other replies ('peers'), the server's
    root-set update ('server'), or each with its own record ('both'); 'server'/'both' need root-size."""
    aggregation: Aggregation = "mean"
    trim_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.2
    client_failure_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    proximal_mu: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    node_eval_every: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    """Every this many rounds (and at the last), each node evaluates the submodel it would deploy
    on its own validation split (0: never; the server's test set is evaluated every round)."""

    @field_validator("ratio_levels", mode="before")
    @classmethod
    def _parse_levels(cls, value: object) -> object:
        """Flower config values cannot be lists: accept "1, 0.5, 0.25"."""
        if isinstance(value, (int, float)):
            return (float(value),)
        if isinstance(value, str):
            try:
                return tuple(float(item) for item in value.split(",") if item.strip())
            except ValueError as err:
                raise ValueError("must be comma-separated numbers, e.g. '1, 0.5, 0.25'") from err
        return value

    @field_validator("ratio_levels")
    @classmethod
    def _check_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 < r <= 1.0 for r in value):
            raise ValueError("every ratio must be in (0, 1], e.g. '1, 0.5, 0.25, 0.125'")
        return value

    @model_validator(mode="after")
    def _check_reference(self) -> RoundKeys:
        if self.screen_reference != "peers" and self.root_size == 0:
            raise ValueError(f"screen-reference='{self.screen_reference}' compares replies with the server's "
                             "root-set update: it needs root-size > 0 (or screen-reference='peers')")
        return self


class ClassKeys(BaseModel):
    """Label skew: a client's label prior in its losses (``tasks.class_prior``) and how the server
    averages the classifier rows (``rabo_pruning.aggregation.HeadRows``). Separate keys: the loss
    runs on the client, the row weights on the server."""

    absent_class_weight: Annotated[float, Field(ge=0, le=1)] = 0.0
    logit_adjustment: Annotated[float, Field(ge=0, le=10)] = 0.0
    head_rows: HeadRows = "covered"


class OutputKeys(BaseModel):
    """The device, what is measured, and where the results and trackers go."""

    loggers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    profile: bool = True
    profile_memory: bool = True
    results_dir: PathStr = "results"
    resume_from: PathStr = ""

    @field_validator("loggers", mode="before")
    @classmethod
    def _parse_loggers(cls, value: object) -> object:
        """Comma-separated, like ratio-levels: "tensorboard" or "tensorboard, mlflow"."""
        if isinstance(value, str):
            names = tuple(item.strip() for item in value.split(",") if item.strip())
            if len(set(names)) != len(names):
                raise ValueError("names a tracker twice")
            return names
        return value


class TaskKeys(BaseModel):
    """The task, and the keys of the tasks on real architectures (``hyper-representation-resnet``,
    ``-vit``, and plug-in tasks, which receive them in their ``tasks.TaskRequest``)."""

    task: str = DEFAULT_TASK
    """A built-in task (:data:`tasks.TASKS`) or ``package.module:factory``."""
    norm_stats: NormStats = "batch"
    resnet_depth: Literal[18, 20, 32, 44, 56] = 20
    resnet_width: Annotated[int, Field(ge=1, le=1024)] = 16

    @field_validator("task")
    @classmethod
    def _check_task(cls, value: str) -> str:
        if value not in TASKS and not PLUGIN_PATH.fullmatch(value):
            raise ValueError(f"must be one of {', '.join(TASKS)} or the import path of your own task "
                             "factory, 'package.module:factory'")
        return value

    def task_options(self) -> dict[str, object]:
        """The keys a task factory receives besides the data's shape (``tasks.TaskRequest``)."""
        return {"norm_stats": self.norm_stats, "resnet_depth": self.resnet_depth,
                "resnet_width": self.resnet_width}
