"""Turning pydantic's validation errors into one message that names every offending key."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from .defaults import AUTO, TUNED_KEYS


class ConfigError(ValueError):
    """An invalid run or node config; the message names every offending key."""


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


def parse_model(model: type[BaseModel], values: Mapping[str, object], what: str) -> BaseModel:
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        lines = [_describe(e, model) for e in err.errors()]  # type: ignore[arg-type]
        raise ConfigError(f"invalid {what}: " + "; ".join(lines)) from None


