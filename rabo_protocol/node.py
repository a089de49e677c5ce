"""A SuperNode's ``--node-config``: its partition, resource budget and own data, validated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .keys import PositiveFloat, PositiveInt
from .parsing import ConfigError, PathStr, parse_model

NonNegativeInt = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(gt=0, le=1)]


class NodeConfig(BaseModel):
    """A SuperNode's ``--node-config`` (simulation sets partition-id and num-partitions)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              alias_generator=lambda n: n.replace("_", "-"))

    partition_id: NonNegativeInt | None = None
    num_partitions: PositiveInt | None = None
    resource_ratio: Ratio | Literal["auto"] | None = None
    memory_mb: PositiveFloat | None = None
    data_path: PathStr | None = None
    device_class: str | None = None
    """The virtual clock's device class of this node (run key ``device-profiles``); wins over the
    run's ``device-classes``."""

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


def parse_node_config(node_config: Mapping[str, object]) -> NodeConfig:
    """Validate a SuperNode's node config; raises :class:`ConfigError` naming every bad key."""
    return parse_model(NodeConfig, node_config, "node config")  # type: ignore[return-value]
