"""The run configuration: every ``[tool.flwr.app.config]`` key, validated in one place.

Both the ServerApp and the ClientApp read ``context.run_config`` through :func:`parse_run_config`,
so a typo or an out-of-range value stops the run with one message naming the key, the value and
what is allowed, instead of a traceback from deep inside or a silently wrong run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from bilevel import EstimatorKnobs, SolverConfig
from bilevel.oracles import Oracle
from bilevel.step_guard import StepGuard
from rabo_pruning.masks import NESTED_POLICIES
from tasks import TASKS, DataSpec

from .defaults import TUNED_KEYS, Source, resolve
from .keys import PLUGIN_PATH, ClassKeys, DataKeys, OutputKeys, Rate, Steps, TaskKeys
from .parsing import parse_model
from .presets import LOCAL_OUTER_STEPS, PRESETS, STRATEGIES, Algorithm, MomentumScope
from .privacy import PrivacyKeys
from .time_keys import TimeKeys


class RunConfig(TaskKeys, DataKeys, TimeKeys, ClassKeys, OutputKeys, PrivacyKeys, EstimatorKnobs):
    """Keys are the hyphenated names used in pyproject.toml and ``--run-config``.

    The estimators' own knobs (``fd-alpha``, ``neumann-steps``, ...) and their checks are inherited
    from the estimator modules (``bilevel.EstimatorKnobs``), the data, round and output keys from
    :class:`DataKeys`, :class:`RoundKeys`, :class:`TimeKeys`, :class:`ClassKeys`, :class:`OutputKeys`
    and :class:`~rabo_protocol.privacy.PrivacyKeys`.

    The keys of ``rabo_protocol.defaults.TUNED_KEYS`` (``mu``, ``algorithm``, ``outer-lr``, ...)
    have no default here: left unset or ``"auto"`` they take the task's (or strategy's), declared
    with the task (``tasks.registry.TASKS``). ``sources`` says, per key, where its value came from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              alias_generator=lambda n: n.replace("_", "-"))
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    # problem (data keys: DataKeys); a tuned key (no default) is filled by _task_defaults
    mu: Annotated[float, Field(ge=0, le=1e6)]
    # method
    strategy: str = "resource-adaptive"
    algorithm: Algorithm
    hypergradient: Oracle = "finite-difference"
    train_outer: bool = True
    num_server_rounds: Annotated[int, Field(ge=1, le=1_000_000)] = 30
    inner_steps: Steps = 5
    v_steps: Steps
    outer_steps: Steps = 3
    inner_lr: Rate = 0.3
    v_lr: Rate
    outer_lr: Rate
    outer_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.5
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 64
    scaler: bool = False
    momentum_scope: MomentumScope = "covered"
    step_guard: StepGuard = "curvature"
    outer_trust_region: Annotated[float, Field(ge=0, le=1e6)]
    # execution (output keys: OutputKeys)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0

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
                + " (an explicit value wins; tasks/registry.py)")

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
        if self.task in TASKS and TASKS[self.task].needs_label_noise and self.label_noise == 0.0:
            raise ValueError(f"task '{self.task}' needs corrupted labels: set 'label-noise' in (0, 1), "
                             "e.g. label-noise=0.5")
        if self.mask_policy not in NESTED_POLICIES:
            nested = " or ".join(repr(p) for p in NESTED_POLICIES)
            needs = f"needs mask-policy {nested} (not '{self.mask_policy}')"
            if self.distill_weight > 0:
                raise ValueError(f"distill-weight={self.distill_weight} distils nested widths: it {needs}")
            if self.own_width_share != "uniform":
                raise ValueError(f"own-width-share={self.own_width_share} shapes the nested widths' draw: "
                                 f"it {needs}")
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
        preset = PRESETS.get(self.strategy)
        return (preset.estimator if preset else None) or self.hypergradient

    def solver_config(self, proximal_mu: float = 0.0) -> SolverConfig:
        """The local solver's step counts and sizes (one outer step for RABO: the server steps x)."""
        return SolverConfig(
            inner_steps=self.inner_steps, v_steps=self.v_steps,
            outer_steps=self.outer_steps if LOCAL_OUTER_STEPS[self.algorithm] else 1,
            inner_lr=self.inner_lr, v_lr=self.v_lr, outer_lr=self.outer_lr, step_guard=self.step_guard,
            outer_trust_region=self.outer_trust_region, proximal_mu=proximal_mu,
        )

    @property
    def run_name(self) -> str:
        """Names the results directory: strategy, algorithm, estimator, masks, capacity, seed."""
        strategy = self.strategy.rsplit(":", 1)[-1] if self.is_plugin else self.strategy
        task = self.task.replace(":", ".")
        return (f"{task}-{strategy}-{self.algorithm}-{self.estimator}-{self.mask_policy}-"
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
        flat["device-classes"] = ", ".join(self.device_classes)
        return flat


def parse_run_config(run_config: Mapping[str, object]) -> RunConfig:
    """Validate a Flower run config; raises :class:`ConfigError` naming every bad key."""
    return parse_model(RunConfig, run_config, "run config")  # type: ignore[return-value]
