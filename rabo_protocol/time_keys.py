"""The run-config keys of time budgets and the virtual clock (``rabo_protocol.clock``,
docs/deployment.md "Time budgets"), which the run config inherits with the round keys."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .clock import DeviceClass, load_device_classes
from .keys import RoundKeys
from .parsing import PathStr

__all__ = ["StepNormalizationName", "TimeKeys"]

StepNormalizationName = Literal["none", "fednova"]


class TimeKeys(RoundKeys):
    """The round keys, time budgets and the virtual clock (``rabo_protocol.clock``, docs/deployment.md "Time
    budgets")."""

    round_deadline: Annotated[float, Field(ge=0, le=7 * 86_400)] = 0.0
    """Seconds of local work per round (0: none). A resource-adaptive round closes at the deadline
    plus ``deadline-grace``; ``capacity='deadline'`` sizes each node to meet it."""
    deadline_grace: Annotated[float, Field(ge=0, le=86_400)] = 2.0
    """Seconds past the deadline the server still waits: transfers, (de)serialization, scheduling."""
    deadline_steps: Literal["all", "fit"] = "fit"
    """``capacity='deadline'``: a node that the deadline cannot fit at the smallest ratio level runs
    the outer steps its timer predicts to fit, at least one (``fit``), or all of them and is late
    (``all``)."""
    deadline_min_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    """``capacity='deadline'`` with ``deadline-steps='fit'``: a node picks the largest ratio level
    at which this share of the round's outer steps (rounded up to whole steps) is predicted to meet
    the deadline, and runs the steps that fit (1: the whole round must fit)."""
    step_normalization: StepNormalizationName = "fednova"
    """How the server averages replies that ran different shares of the round's outer steps
    (``step-share``, ``deadline-steps='fit'``): ``fednova`` divides each reply's update by its
    share and moves the global model by the average times the replies' mean share (FedNova's
    effective steps, ``rabo_strategy/step_norm.py``), a share below ``deadline-min-share`` counting
    as that share; ``none``: the plain average, which weighs a node's data by the steps it ran."""
    query_wait: Literal["deadline", "all"] | float = "deadline"
    """Seconds after its query that a round waits for a node's profile; an answer that comes later
    is taken at the next round's start and the node trains from then on. ``deadline``:
    ``round-deadline`` where rounds close at it (``resource-adaptive``, the real clock), else
    ``all``: every answer, up to 120 s."""
    device_classes: tuple[str, ...] = ()
    """The virtual clock: device class names cycled by partition id (empty: the real clock)."""
    device_profiles: PathStr = ""
    """A TOML file of device classes (empty: the ones that ship, ``rabo_protocol/devices.toml``)."""

    @field_validator("device_classes", mode="before")
    @classmethod
    def _parse_classes(cls, value: object) -> object:
        """Comma-separated, like ratio-levels: "laptop, phone"."""
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("query_wait", mode="before")
    @classmethod
    def _seconds_or_name(cls, value: object) -> object:
        if value in ("deadline", "all"):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
            raise ValueError("must be 'deadline', 'all' or seconds in (0, 86400]")
        return float(value)

    @model_validator(mode="after")
    def _check_clock(self) -> TimeKeys:
        if self.capacity == "deadline" and self.round_deadline == 0:
            raise ValueError("capacity='deadline' sizes each node to meet round-deadline: set "
                             "round-deadline to the seconds of local work per round, e.g. 30")
        if self.device_classes:
            known = self.device_catalogue()
            if unknown := [n for n in self.device_classes if n not in known]:
                raise ValueError(f"device-classes names {', '.join(map(repr, unknown))}: allowed "
                                 f"{', '.join(known)} (device-profiles)")
        return self

    def device_catalogue(self) -> dict[str, DeviceClass]:
        """The device classes of ``device-profiles``; ValueError naming the key if unreadable."""
        try:
            return load_device_classes(self.device_profiles)
        except ValueError as err:
            raise ValueError(f"device-profiles={self.device_profiles!r}: {err}") from None

    def closes_at(self, sizing: str | None) -> float | None:
        """Seconds after which the server closes a train round of ``sizing``: ``round-deadline``
        plus grace for ``resource-adaptive``; None without a deadline or for ``full-model``,
        ``drop-weak`` and plug-in strategies (None), which wait for their nodes (``round-timeout``)."""
        if self.round_deadline == 0 or sizing != "resource-adaptive":
            return None
        return min(self.round_deadline + self.deadline_grace, self.round_timeout)

    def real_close(self, sizing: str | None) -> float | None:
        """:meth:`closes_at` on the real clock; None on the virtual clock, which decides lateness itself."""
        return None if self.device_classes else self.closes_at(sizing)

    def profile_wait(self, sizing: str | None) -> float | None:
        """The seconds of ``query-wait`` for a strategy of ``sizing`` (None: every answer)."""
        if self.query_wait == "deadline":
            return self.round_deadline if self.real_close(sizing) is not None else None
        return None if self.query_wait == "all" else float(self.query_wait)

    def train_timeout(self, sizing: str | None) -> float:
        """The real seconds the server waits for train replies: :meth:`real_close`, else ``round-timeout``."""
        closes = self.real_close(sizing)
        return closes if closes is not None else self.round_timeout
