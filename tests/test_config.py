"""Run-config validation: pyproject defaults, and one clear message per bad key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bilevel import ESTIMATORS, ORACLES
from rabo_protocol import (
    PRESETS,
    ConfigError,
    RunConfig,
    parse_node_config,
    parse_run_config,
)
from rabo_protocol.defaults import TASK_DEFAULTS, TUNED_KEYS
from rabo_pruning import MASK_POLICIES
from tasks import DEFAULT_TASK, TASKS
from tasks.datasets import DATASETS
from tasks.partitioners import PARTITIONERS

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_are_the_model_defaults() -> None:
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    config = app["config"]
    assert parse_run_config(config).to_flat() == RunConfig().to_flat()
    assert set(config) == {f.alias for f in RunConfig.model_fields.values()}
    # the keys with per-task defaults are "auto" there, and only those
    assert {k for k, v in config.items() if v == "auto" and k != "device"} == set(TUNED_KEYS)


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_task_defaults_fill_what_the_user_left_unset_and_the_user_wins() -> None:
    # as Flower passes it: pyproject's values with the user's on top
    cfg = parse_run_config({**_pyproject(), "task": "hyper-cleaning", "label-noise": 0.5})
    row = TASK_DEFAULTS["hyper-cleaning"]
    assert (cfg.algorithm, cfg.mu, cfg.outer_lr, cfg.v_lr, cfg.v_steps) == (
        row["algorithm"], row["mu"], row["outer-lr"], row["v-lr"], row["v-steps"])
    assert cfg.sources["outer-lr"] == "task default" and cfg.sources["task"] == "user"
    assert cfg.sources["v-lr"] == "global default"  # hyper-cleaning's v-lr is the global one
    assert cfg.sources["inner-lr"] == "global default" and cfg.sources["label-noise"] == "user"
    line = cfg.describe_defaults()
    assert line is not None and "task 'hyper-cleaning'" in line and "outer-lr=100.0" in line
    # an explicit value wins, "auto" asks for the task's
    cfg = parse_run_config({"task": "hyper-cleaning", "label-noise": 0.5, "outer-lr": 30.0, "mu": "auto",
                            "algorithm": "rabo"})
    assert (cfg.outer_lr, cfg.mu, cfg.algorithm) == (30.0, row["mu"], "rabo")
    assert cfg.sources["outer-lr"] == "user" and cfg.sources["mu"] == "task default"
    # the CNN runs on the global defaults (nothing to announce); the MLP differs in two keys
    cfg = parse_run_config({**_pyproject(), "task": "hyper-representation"})
    assert cfg.to_flat() == RunConfig().to_flat() and cfg.describe_defaults() is None
    cfg = parse_run_config({**_pyproject(), "task": "hyper-representation-mlp"})
    differing = {"task": "hyper-representation-mlp", "algorithm": "rabo", "mask-policy": "static"}
    assert cfg.to_flat() == RunConfig().to_flat() | differing
    assert cfg.describe_defaults().endswith("applied: algorithm=rabo, mask-policy=static "
                                            "(an explicit value wins; tasks/registry.py)")
    # plug-in strategies get RAFBO (they average models); an explicit rabo is refused, not changed
    cfg = parse_run_config({**_pyproject(), "strategy": "tests.toy_strategy:ToyAverage"})
    assert cfg.algorithm == "rafbo" and cfg.sources["algorithm"] == "strategy default"
    with pytest.raises(ConfigError, match="use algorithm='rafbo'"):
        parse_run_config({"strategy": "tests.toy_strategy:ToyAverage", "algorithm": "rabo"})


def test_every_task_row_is_a_valid_run_config() -> None:
    """The tasks declare their tuned values with their registration: the default task's row names
    every tuned key, the others override some of them, and each row parses as its task's run."""
    assert tuple(TASK_DEFAULTS) == tuple(TASKS) and set(TUNED_KEYS) == set(TASKS[DEFAULT_TASK].defaults)
    for name, entry in TASKS.items():
        assert set(entry.defaults) <= set(TUNED_KEYS), name
        cfg = parse_run_config({"task": name, "label-noise": 0.5 if entry.needs_label_noise else 0.0})
        flat = cfg.to_flat()
        assert {k: flat[k] for k in TUNED_KEYS} == TASK_DEFAULTS[name], name


@pytest.mark.parametrize(("key", "names"), [
    ("mask-policy", MASK_POLICIES), ("partitioner", tuple(PARTITIONERS)), ("dataset", tuple(DATASETS)),
    ("hypergradient", ORACLES)])
def test_a_keys_allowed_values_are_its_registry(key: str, names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({key: "no-such-name"})
    listed = str(info.value).split("Input should be ", 1)[1]
    assert re.findall(r"'([^']+)'", listed.split(" (or ")[0]) == list(names)


def test_every_presets_estimator_is_registered() -> None:
    assert {p.estimator for p in PRESETS.values()} - {None} <= set(ESTIMATORS)


def test_a_bad_tuned_value_names_auto() -> None:
    with pytest.raises(ConfigError, match=r"'mu' = 'fast': Input should be a valid number \(or 'auto'"):
        parse_run_config({"mu": "fast"})


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"inner-step": 5}, "unknown key 'inner-step'; known keys: "),
        ({"ratio-levels": "1, 1.5"}, "'ratio-levels' = '1, 1.5': every ratio must be in (0, 1]"),
        ({"ratio-levels": "1, half"}, "must be comma-separated numbers"),
        ({"inner-steps": -1}, "'inner-steps' = -1: Input should be greater than or equal to 1"),
        ({"v-steps": 0}, "'v-steps' = 0: Input should be greater than or equal to 1"),
        ({"num-server-rounds": "10"}, "'num-server-rounds' = '10': Input should be a valid integer"),
        ({"num-server-rounds": 2.5}, "'num-server-rounds' = 2.5: Input should be a valid integer"),
        ({"download": "yes"}, "'download' = 'yes': Input should be a valid boolean"),
        ({"outer-lr": -0.1}, "'outer-lr' = -0.1: Input should be greater than 0"),
        # inf / NaN are refused by every float check, not only the positive ones
        ({"outer-lr": float("inf")}, "'outer-lr' = inf: Input should be a finite number"),
        ({"fd-alpha": float("inf")}, "'fd-alpha' = inf: Input should be a finite number"),
        ({"max-update-norm": float("nan")}, "'max-update-norm' = nan: Input should be a finite number"),
        ({"seed": -1}, "'seed' = -1: Input should be greater than or equal to 0"),
        # upper bounds: a slip of a few orders of magnitude stops the run
        ({"inner-steps": 10**9}, "'inner-steps' = 1000000000: Input should be less than or equal to 100000"),
        ({"num-server-rounds": 10**8}, "'num-server-rounds' = 100000000: Input should be less than or equal"),
        ({"batch-size": 10**7}, "'batch-size' = 10000000: Input should be less than or equal to 65536"),
        ({"outer-lr": 1e12}, "'outer-lr' = 1000000000000.0: Input should be less than or equal to"),
        ({"fd-alpha": 5.0}, "'fd-alpha' = 5.0: Input should be less than or equal to 1"),
        ({"seed": 2**40}, "'seed' = 1099511627776: Input should be less than or equal to 4294967295"),
        ({"v-lr": 0.0}, "'v-lr' = 0.0: Input should be greater than 0"),
        # the built-in names, in registry order (a new one is appended after them)
        ({"task": "cleaning"}, "'task' = 'cleaning': must be one of hyper-representation, "
                               "hyper-representation-mlp, hyper-cleaning, hyper-representation-resnet, "
                               "hyper-representation-vit"),
        ({"task": "cleaning"}, " or the import path of your own task factory"),
        ({"mask-policy": "dropout"}, "'mask-policy' = 'dropout': Input should be 'static', 'rolling', "
                                     "'random', 'importance', 'coverage', 'combined', 'ordered-dropout'"),
        ({"mask-policy": "dropout"}, "'nested-coverage'"),
        ({"partitioner": "pathological"}, "'partitioner' = 'pathological': Input should be 'iid', "
                                          "'dirichlet', 'shards', 'budget-correlated' or 'separated'"),
        ({"budget-correlation": 1.5}, "'budget-correlation' = 1.5: Input should be less than or equal to 1"),
        ({"shards-per-client": 0}, "'shards-per-client' = 0: Input should be greater than or equal to 1"),
        ({"momentum-scope": "some"}, "'momentum-scope' = 'some': Input should be 'covered' or 'all'"),
        ({"step-guard": "clip"}, "'step-guard' = 'clip': Input should be 'curvature' or 'none'"),
        ({"scaler": "on"}, "'scaler' = 'on': Input should be a valid boolean"),
        ({"task": "hyper-cleaning"}, "task 'hyper-cleaning' needs corrupted labels: set 'label-noise'"),
        ({"label-noise": 1.0}, "'label-noise' = 1.0: Input should be less than 1"),
        ({"strategy": "fedavg"}, "'strategy' = 'fedavg': must be one of resource-adaptive, full-model, "
                                 "drop-weak, fednest-aid, f2sa or the import path"),
        ({"strategy": "flwr.serverapp.strategy:FedAvg", "algorithm": "rabo"},
         "plug-in strategies receive models"),
        ({"capacity": "elastic"}, "'capacity' = 'elastic': Input should be 'fixed', 'dynamic' or 'deadline'"),
        ({"f2sa-lambda": 10.0, "f2sa-lambda-max": 5.0}, "'f2sa-lambda-max' = 5.0 must be at least"),
        ({"neumann-steps": 0}, "'neumann-steps' = 0"),
        ({"client-failure-rate": 1.0}, "'client-failure-rate' = 1.0: Input should be less than 1"),
        ({"min-successful-replies": 0}, "'min-successful-replies' = 0"),
        ({"inner_lr": 0.1}, "unknown key 'inner_lr'"),
        ({"algorithm": "sgd"}, "'algorithm' = 'sgd': Input should be 'rabo' or 'rafbo'"),
        ({"hypergradient": "neumann"}, "'hypergradient' = 'neumann'"),
        ({"inner-lr": 0}, "'inner-lr' = 0: Input should be greater than 0"),
        ({"dataset": "imagenet"}, "'dataset' = 'imagenet'"),
    ],
)
def test_bad_values_name_the_key(override: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(override)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and "Traceback" not in message


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({"inner-steps": -1, "v-lr": -2.0})
    assert "'inner-steps'" in str(info.value) and "'v-lr'" in str(info.value)


def test_ratio_levels_parse_from_a_string() -> None:
    assert parse_run_config({"ratio-levels": "1,0.5, 0.25"}).ratio_levels == (1.0, 0.5, 0.25)


@pytest.mark.parametrize(
    ("node_config", "fragment"),
    [
        ({"resource-ratio": 1.5}, "'resource-ratio' = 1.5: must be a number in (0, 1] or 'auto'"),
        ({"resource-ratio": 0.0}, "'resource-ratio' = 0.0: must be a number in (0, 1] or 'auto'"),
        ({"resource-ratio": "half"}, "'resource-ratio' = 'half': must be a number in (0, 1] or 'auto'"),
        ({"resource_ratio": 0.5},
         "unknown key 'resource_ratio'; known keys: data-path, device-class, memory-mb"),
        ({"partition-id": 4, "num-partitions": 4}, "partition-id=4 must be below num-partitions=4"),
        ({"partition-id": -1}, "'partition-id' = -1: Input should be greater than or equal to 0"),
        ({"resource-ratio": 0.5, "memory-mb": 64.0}, "give resource-ratio or memory-mb, not both"),
        ({"memory-mb": -1.0}, "'memory-mb' = -1.0: Input should be greater than 0"),
        ({"data-path": "/d.npz", "partition-id": 1}, "give both partition-id and num-partitions or neither"),
    ],
)
def test_bad_node_config_names_the_key(node_config: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match="invalid node config: ") as info:
        parse_node_config(node_config)
    assert fragment in str(info.value)


def test_training_needs_a_partition() -> None:
    with pytest.raises(ConfigError, match="'partition-id' and 'num-partitions' are required"):
        parse_node_config({"resource-ratio": 0.5}).partition()
    assert parse_node_config({"partition-id": 1, "num-partitions": 3}).partition() == (1, 3)
