"""Run-config validation: pyproject defaults, and one clear message per bad key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from server_app.config import ConfigError, RunConfig, parse_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_are_the_model_defaults() -> None:
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    config = app["config"]
    assert parse_run_config(config) == RunConfig()
    assert set(config) == {f.alias for f in RunConfig.model_fields.values()}


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"inner-step": 5}, "unknown key 'inner-step'; known keys: "),
        ({"ratio-levels": "1, 1.5"}, "'ratio-levels' = '1, 1.5': every ratio must be in (0, 1]"),
        ({"ratio-levels": "1, half"}, "must be comma-separated numbers"),
        ({"inner-steps": -1}, "'inner-steps' = -1: Input should be greater than or equal to 0"),
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
