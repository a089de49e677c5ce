"""Turning pydantic's validation errors into one message that names every offending key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ValidationError

from .defaults import AUTO, TUNED_KEYS


class ConfigError(ValueError):
    """An invalid run or node config; the message names every offending key."""


def _usable_path(value: str) -> str:
    """A path every system call can take: no NUL byte, encodable as a file name, no component over
    255 bytes (NAME_MAX of the common file systems); otherwise the run would fail deep inside."""
    if "\x00" in value:
        raise ValueError("contains a NUL byte; give a file system path")
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError:
        raise ValueError("cannot be encoded as a file name on this system") from None
    if any(len(part) > 255 for part in encoded.split(os.sep.encode())):
        raise ValueError("has a path component longer than 255 bytes")
    return value


PathStr = Annotated[str, AfterValidator(_usable_path)]
"""A path-valued key (checked as a path; whether it exists is for its user to say)."""


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


