"""Replies that ran different shares of a round's outer steps (``step-normalization``).

Under ``capacity='deadline'`` with ``deadline-steps='fit'`` a slow node runs only the outer steps
that fit its deadline and reports the share it ran (``step-share``). A plain average then weighs
its data by its steps: budget-correlated, the classes that live on the slow devices are learned
more slowly than the others (the objective inconsistency of FedNova, Wang et al., NeurIPS 2020,
"Tackling the Objective Inconsistency Problem in Heterogeneous Federated Optimization").

``fednova``: each reply's model update (returned minus sent, for x, y and v; RABO's hypergradient
h is an average already) is divided by its share before any screen sees it, so every reply is a
whole round's worth; after the average, the global update is multiplied by the replies' mean
share, weighted like the average (FedNova's effective steps). Where every node ran its whole
round both are the identity. ``none``: the plain average.

A share below ``deadline-min-share`` (the share the deadline sizing asks of a node; 0.5 by
default) counts as that share: the one or two steps of a node the deadline does not fit are
not extrapolated to a whole round. On the virtual clock (budget-correlated and IID, two seeds
each) this kept FedNova's gain on the budget-correlated split and cut its loss after IID's
second round from 7.2 to 5.0 points (docs/results.md, section 10).

The server checks the share it divides by: a positive multiple of one outer step, at most the
round (``k / outer-steps``, k = 1 .. outer-steps), else the reply is refused. A node's update is
thus multiplied by at most ``1 / deadline-min-share``: ``max-update-norm`` bounds the update as the
node sent it, the agreement screen and ``dp-clip`` the normalized one, like any other reply's.

    >>> import numpy as np
    >>> norm = StepNormalization("fednova", outer_steps=4, floor=0.5)
    >>> norm.share({"step-share": 0.75}), norm.share({"step-share": 0.25})
    (0.75, 0.5)
    >>> norm.scaled(np.array([1.0, 3.0]), np.array([1.0, 1.0]), 0.5).tolist()
    [1.0, 5.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import get_args

import numpy as np
from flwr.app import MetricRecord

from rabo_protocol import RunConfig
from rabo_protocol.time_keys import StepNormalizationName

from .replies import ParsedReply

__all__ = ["STEP_NORMALIZATIONS", "StepNormalization"]

STEP_NORMALIZATIONS: tuple[str, ...] = get_args(StepNormalizationName)
MODEL_PARTS = ("x", "y", "v")
"""The parts whose replies are models (their update: returned minus sent); h is a direction."""


@dataclass(frozen=True)
class StepNormalization:
    """``step-normalization`` for a run of ``outer_steps`` outer steps per round."""

    mode: str
    outer_steps: int
    floor: float = 0.0
    """A share below it counts as ``floor`` (the run's ``deadline-min-share``): an update is
    multiplied by at most ``1 / floor``."""

    def __post_init__(self) -> None:
        if self.mode not in STEP_NORMALIZATIONS:
            raise ValueError(f"unknown step-normalization '{self.mode}'; "
                             f"allowed: {', '.join(STEP_NORMALIZATIONS)}")

    @classmethod
    def of(cls, cfg: RunConfig) -> StepNormalization:
        """The run's: ``step-normalization``, its outer steps and ``deadline-min-share``."""
        return cls(cfg.step_normalization, cfg.solver_config().outer_steps, cfg.deadline_min_share)

    @property
    def on(self) -> bool:
        return self.mode == "fednova"

    def share(self, metrics: Mapping[str, object]) -> float:
        """A reply's ``step-share`` (1 where it reports none), checked: ValueError unless it is
        ``k / outer_steps`` for a whole k in 1 .. outer_steps."""
        share = metrics.get("step-share", 1.0)
        number = isinstance(share, (int, float)) and not isinstance(share, bool)
        steps = share * self.outer_steps if number else math.nan  # type: ignore[operator]
        if not (math.isfinite(steps) and 0.5 <= steps <= self.outer_steps + 1e-6
                and abs(steps - round(steps)) <= 1e-6):
            raise ValueError(f"step-share={share!r} is not k/{self.outer_steps} for a whole k from 1 "
                             f"to {self.outer_steps} (the round's outer steps)")
        return max(round(steps) / self.outer_steps, self.floor)

    @staticmethod
    def scaled(value: np.ndarray, sent: np.ndarray, share: float) -> np.ndarray:
        """``value`` whose update from ``sent`` is divided by ``share`` (same dtype)."""
        return (sent + (value - sent) / share).astype(value.dtype)

    def normalized(self, reply: ParsedReply,
                   reference: Mapping[str, Mapping[str, np.ndarray]]) -> ParsedReply:
        """``reply`` with each model part's update (from its slice of the global ``reference``)
        divided by its checked share. Off: ``reply``."""
        share = self.share(reply.metrics) if self.on else 1.0
        if share == 1.0:
            return reply
        values = dict(reply.values)
        for key, value in reply.values.items():
            part, _, name = key.partition(":")
            if part in MODEL_PARTS:
                values[key] = self.scaled(value, reply.index[key].take(reference[part][name]), share)
        return replace(reply, values=values)

    def effective_steps(self, replies: Iterable[ParsedReply],
                        weight: Callable[[MetricRecord], float]) -> float:
        """FedNova's effective steps: the ``replies``' mean share, each weighted as in the average
        (``weight`` of its metrics); 1 when off or without replies."""
        pairs = [(self.share(r.metrics), weight(r.metrics)) for r in replies] if self.on else []
        total = sum(w for _, w in pairs)
        return sum(s * w for s, w in pairs) / total if total > 0 else 1.0
