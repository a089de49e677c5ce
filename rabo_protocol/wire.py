"""The message format shared by the strategy and the ClientApp.

Train instruction: ``arrays`` = dense slices keyed ``"{part}:{param}"`` (part x, y or v) and
``config`` = the strategy's client config (``in-shape``, ``num-classes``, ``input-mean``,
``input-std``) plus ``server-round``, ``resource-ratio`` and ``width.{layer}`` for every layer; with
``dp-clip`` > 0 also ``dp-noise-multiplier`` in ``config`` and a ``dp-coverage`` record (each
coordinate's planned coverage, keyed ``x:<param>``, ``y:<param>``, the node's slices;
``rabo_protocol.privacy``).
Train reply: ``arrays`` with parts ``presets.REPLY_PARTS[algorithm]`` ((h, y, v) for RABO,
h = hypergradient shaped like x; (x, y, v) for RAFBO) and ``metrics`` with ``num-examples``.
Evaluate instruction (``node-eval-every``): ``arrays`` = the slices of x and y of the submodel the
node deploys (part s: its BatchNorm statistics, with ``norm-stats='recalibrate'``) and ``config``
as for train; reply: ``metrics`` with ``eval-loss``, ``eval-accuracy`` and ``num-examples``.
Query instruction: ``config`` = the client config and ``server-round``; reply: ``profile``, a
:class:`Profile` (:func:`encode_profile`, :func:`decode_profile`), or {error}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from .flwr_compat import message_to_proto

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
PROFILE = "profile"
PARTS = ("x", "y", "v", "h", "s")


def message_bytes(message: Message) -> int:
    """Size in bytes of the message's protobuf serialization (content or error, and metadata): the
    wire format of the SuperLink."""
    return int(message_to_proto(message).ByteSize())


def pack(parts: Mapping[str, Mapping[str, np.ndarray | torch.Tensor]]) -> ArrayRecord:
    """{part: {param: tensor}} -> one ArrayRecord with keys ``part:param``."""
    record = ArrayRecord()
    for part, tensors in parts.items():
        for name, tensor in tensors.items():
            if isinstance(tensor, torch.Tensor):
                tensor = tensor.detach().cpu().numpy()
            record[f"{part}:{name}"] = Array(np.ascontiguousarray(tensor))
    return record


def unpack(record: ArrayRecord) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`pack`; raises ValueError on a key without a known part."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, array in record.items():
        part, sep, name = key.partition(":")
        if not sep or part not in PARTS:
            raise ValueError(f"unexpected array key '{key}'")
        parts.setdefault(part, {})[name] = array.numpy()
    return parts


def task_shape_config(in_shape: tuple[int, ...], num_classes: int, input_mean: float,
                      input_std: float) -> dict[str, list[int] | int | float]:
    """The model's input shape and classes (nodes build the model from these, not from a dataset)
    and the run dataset's input standardisation (nodes with their own files apply it)."""
    return {"in-shape": [int(d) for d in in_shape], "num-classes": int(num_classes),
            "input-mean": float(input_mean), "input-std": float(input_std)}


def task_shape_from_config(config: Mapping[str, object]) -> tuple[tuple[int, int, int], int]:
    channels, height, width = (int(d) for d in config["in-shape"])  # type: ignore[union-attr]
    return (channels, height, width), int(config["num-classes"])  # type: ignore[call-overload]


def widths_config(widths: Mapping[str, int]) -> dict[str, int]:
    return {f"width.{name}": int(w) for name, w in widths.items()}


def widths_from_config(config: Mapping[str, object]) -> dict[str, int]:
    prefix = "width."
    return {k[len(prefix):]: int(v) for k, v in config.items() if k.startswith(prefix)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Profile:
    """A node's answer to the profile query: who it is, what it holds, what it can train."""

    partition_id: int | None = None
    num_partitions: int | None = None
    num_examples: int | None = None
    """The node's train examples: its train replies may not claim more."""
    resource_ratio: float | None = None
    """The ratio the node declares (None: the server assigns one from ``ratio-levels``)."""
    ratio_source: str = "node-config"
    """Where a declared ratio comes from (``node-config``, ``memory-mb``, ``auto``, ``deadline``)."""
    device_class: str | None = None
    """The virtual clock's device class of the node (None: the real clock)."""


_KEYS = {f.name: f.name.replace("_", "-") for f in fields(Profile)}
_TOKEN = re.compile(r"[A-Za-z0-9_.:=/ -]{1,64}")


def encode_profile(profile: Profile) -> ConfigRecord:
    """The profile as a ConfigRecord; keys left None are absent."""
    return ConfigRecord({_KEYS[k]: v for k, v in profile.__dict__.items() if v is not None})


def encode_profile_error(message: str) -> ConfigRecord:
    """A node that cannot take part (invalid node config, unusable data) says why."""
    return ConfigRecord({"error": message})


def _integer(record: ConfigRecord, key: str, low: int) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}={value!r} is not an integer >= {low}")
    return value


def _token(record: ConfigRecord, key: str) -> str | None:
    value = record.get(key)
    if value is not None and not (isinstance(value, str) and _TOKEN.fullmatch(value)):
        raise ValueError(f"{key}={str(value)[:40]!r} is not a short printable token")
    return value  # type: ignore[return-value]


def decode_profile(record: ConfigRecord) -> Profile:
    """The node's :class:`Profile`; ValueError for a reported error or an invalid value."""
    if "error" in record:
        raise ValueError(str(record["error"]))
    ratio, source = record.get("resource-ratio"), record.get("ratio-source")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                              or not 0.0 < ratio <= 1.0):
        raise ValueError(f"node-config resource-ratio={ratio!r} is outside (0, 1]")
    # the source reaches the server's log and summary.json: a short printable token, nothing else
    if source is not None and not (isinstance(source, str) and _TOKEN.fullmatch(source)):
        raise ValueError(f"ratio-source={str(source)[:40]!r} is not a short printable token")
    return Profile(
        partition_id=_integer(record, "partition-id", 0),
        num_partitions=_integer(record, "num-partitions", 1),
        num_examples=_integer(record, "num-examples", 1),
        resource_ratio=None if ratio is None else float(ratio), ratio_source=source or "node-config",
        device_class=_token(record, "device-class"),
    )
