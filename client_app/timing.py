"""A node's time budget: predict a local round's seconds at each ratio, pick the largest that meets
``round-deadline`` (``capacity='deadline'``), and learn from the rounds it actually runs.

The prediction for ratio r is ``startup + base[r] x factor``. ``base`` comes from probes at query
time: on the real clock, the measured seconds of one warm outer step at r times the outer steps of
a round; on the virtual clock (a :class:`~rabo_protocol.clock.DeviceClass`), the counted FLOPs and
steps at the device's speed. ``factor`` starts at 1 and moves halfway to observed / predicted
after every round (what the probe misses: data, model building, a device slowed by others).
``startup`` is what a message costs before the ClientApp's handler runs: a SuperNode starts a new
``flwr-clientapp`` process per message, whose imports alone took 2.6 s of CPU on our reference core,
or forks a warm one (``deploy/warm_exec.py``: 0.2 s) (:func:`startup_seconds`; 0 in simulation,
whose processes live across messages).

>>> timer = RoundTimer(levels=(1.0, 0.5, 0.25), base=(8.0, 3.0, 1.0))
>>> timer.pick(deadline=5.0), timer.pick(deadline=5.0, cap=0.25), timer.pick(deadline=0.5)
(0.5, 0.25, 0.25)
>>> timer.observe(0.5, seconds=9.0).pick(deadline=5.0)  # 3x slower than predicted: factor 2
0.25
>>> timer.observe(0.25, seconds=1.0, startup=4.5).pick(deadline=5.0)  # 4.5 s before any work
0.25
>>> timer.observe(0.25, seconds=1.0, startup=4.5).predict(0.25)
3.25
>>> timer.steps_within(0.25, deadline=0.5, outer_steps=4)  # 1 s for 4 outer steps: 2 fit in 0.5 s
2
>>> timer.pick(deadline=5.0, share=0.5)  # half of a round at ratio 1 fits: wider, fewer steps
1.0

A node that the deadline cannot fit even at the smallest level is late and left out of the round
(``deadline-steps='all'``), or runs only the outer steps its timer predicts to fit, at least one
(``'fit'``: :func:`deadline_steps`); the timer learns from such a round as from a whole one. With
``'fit'`` a node trades steps for width: it picks the largest level at which ``deadline-min-share``
of the round fits (:func:`min_share`); on the real clock it counts from the server's send
(:func:`message_lead`) and skips a message whose first outer step would end past the deadline.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
from flwr.app import ConfigRecord, RecordDict

from rabo_protocol import NodeConfig, RunConfig
from rabo_protocol.clock import DeviceClass
from tasks import BilevelTask, ClientData

from .budget import probe_round
from .local import round_steps

__all__ = ["RoundTimer", "after_round", "deadline_ratio", "deadline_steps", "message_lead", "min_share",
           "node_device", "profile_timer", "startup_seconds"]

STATE_KEY = "round-timer"


@dataclass(frozen=True)
class RoundTimer:
    """Predicted seconds of a local round at each ratio level (``levels``, descending)."""

    levels: tuple[float, ...]
    base: tuple[float, ...]
    factor: float = 1.0
    startup: float = 0.0
    """Seconds a message costs before the handler runs (learnt like ``factor``)."""
    cap: float = 1.0
    """The largest ratio the node may train (its memory budget or declared ratio)."""

    def predict(self, ratio: float, share: float = 1.0) -> float:
        """Seconds of a local round at ``ratio`` that runs ``share`` of the round's outer steps."""
        return self.startup + self.base[self.levels.index(ratio)] * self.factor * share

    def step_seconds(self, ratio: float, outer_steps: int) -> float:
        """Predicted seconds of one of a round's ``outer_steps`` at ``ratio``."""
        return self.base[self.levels.index(ratio)] * self.factor / outer_steps

    def steps_within(self, ratio: float, deadline: float, outer_steps: int) -> int:
        """How many of a round's ``outer_steps`` are predicted to finish at ``ratio`` within
        ``deadline``: all where the round fits, else as many as fit, at least one."""
        per_step = self.step_seconds(ratio, outer_steps)
        if per_step <= 0:
            return outer_steps
        return max(1, min(outer_steps, int((deadline - self.startup) / per_step)))

    def pick(self, deadline: float, cap: float | None = None, share: float = 1.0) -> float:
        """The largest level <= ``cap`` (default: the timer's) at which ``share`` of a round is
        predicted to finish within ``deadline`` (else the smallest such level: the node will be
        late, and the server closes the round without it)."""
        cap = self.cap if cap is None else cap
        fitting = [r for r in self.levels if r <= cap] or [min(self.levels)]
        return next((r for r in fitting if self.predict(r, share) <= deadline), fitting[-1])

    def observe(self, ratio: float, seconds: float, startup: float = 0.0, share: float = 1.0) -> RoundTimer:
        """The timer after a round at ``ratio`` of ``share`` of the round's outer steps, whose
        handler took ``seconds`` and whose process spent ``startup`` seconds before it (unchanged
        for an unknown ratio)."""
        if ratio not in self.levels or seconds <= 0 or share <= 0:
            return self
        observed = seconds / share / self.base[self.levels.index(ratio)]
        return replace(self, factor=0.5 * self.factor + 0.5 * observed,
                       startup=0.5 * self.startup + 0.5 * startup)

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({"levels": list(self.levels), "base": list(self.base), "factor": self.factor,
                             "startup": self.startup, "cap": self.cap})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> RoundTimer:
        return cls(tuple(record["levels"]), tuple(record["base"]),  # type: ignore[arg-type]
                   float(record["factor"]), float(record["startup"]), float(record["cap"]))  # type: ignore[arg-type]


def node_device(cfg: RunConfig, node: NodeConfig) -> DeviceClass | None:
    """The node's device class on the virtual clock: its node config's ``device-class``, else the
    run's ``device-classes`` at its partition id (cycled); None: the real clock."""
    name = node.device_class
    if name is None and cfg.device_classes and node.partition_id is not None:
        name = cfg.device_classes[node.partition_id % len(cfg.device_classes)]
    if name is None:
        return None
    catalogue = cfg.device_catalogue()
    if name not in catalogue:
        raise ValueError(f"node-config device-class={name!r}: allowed {', '.join(catalogue)} "
                         "(device-profiles)")
    return catalogue[name]


_ASKED: list[bool] = []  # whether this process already reported its startup


def startup_seconds() -> float:
    """Seconds from this process's start (or fork) to now, the first time a process that a SuperNode
    started for one message (``flwr-clientapp``) asks; 0 otherwise (a simulation's long-lived
    processes)."""
    if _ASKED or Path(sys.argv[0]).name != "flwr-clientapp":
        return 0.0
    _ASKED.append(True)
    return max(0.0, time.time() - psutil.Process().create_time())


def deadline_ratio(task: BilevelTask, data: ClientData, cfg: RunConfig, device: DeviceClass | None,
                   cap: float, state: RecordDict, startup: float = 0.0) -> float:
    """Query time, ``capacity='deadline'``: profile the timer (``startup``: what this message's
    process start cost), keep it in the node's ``state``, return the ratio to train first."""
    startup = device.startup_s if device else startup
    timer = replace(profile_timer(task, data, cfg, device, startup), cap=cap, startup=startup)
    state[STATE_KEY] = timer.to_record()
    return timer.pick(cfg.round_deadline, share=min_share(cfg))


def min_share(cfg: RunConfig) -> float:
    """The share of a round that must fit the deadline at the level a node picks: with
    ``deadline-steps='fit'``, ``deadline-min-share`` of the outer steps, rounded up to whole steps
    (RABO's one outer step: the whole round); 1 with ``'all'``."""
    outer = cfg.solver_config().outer_steps
    return math.ceil(cfg.deadline_min_share * outer - 1e-9) / outer if cfg.deadline_steps == "fit" else 1.0


def message_lead(cfg: RunConfig, device: DeviceClass | None, created_at: float,
                 startup: float) -> float | None:
    """Real clock, ``capacity='deadline'`` with ``deadline-steps='fit'``: what this message has cost
    before the handler, as ``round-deadline`` counts it: the seconds since the server sent it (its
    ``created_at``, on the server's clock: the SuperNode's polling, messages queued before it, the
    process start) less half of ``deadline-grace`` (the SuperNode's wait for its next poll, which
    the grace covers, as its other half covers the wait to push the reply), at least the process's
    ``startup``. None on the virtual clock, with ``'all'``, or when the node's clock is not the
    server's (behind it, or more than ``round-timeout`` ahead)."""
    if device is not None or cfg.capacity != "deadline" or cfg.deadline_steps != "fit":
        return None
    lead = time.time() - created_at
    return max(startup, lead - cfg.deadline_grace / 2) if 0.0 <= lead <= cfg.round_timeout else None


def deadline_steps(cfg: RunConfig, state: RecordDict, ratio: float, lead: float | None = None) -> int | None:
    """Train time, ``capacity='deadline'`` with ``deadline-steps='fit'``: the outer steps that the
    node's timer predicts to finish at ``ratio`` within ``round-deadline``, after ``lead`` seconds
    already gone (:func:`message_lead`; None: the timer's learnt startup); None: all of them.
    ValueError when even one outer step is predicted to end after the deadline, the handler having
    started late: the node skips the message rather than compute a reply the server drops (a node
    behind by a round stays behind otherwise)."""
    if cfg.capacity != "deadline" or cfg.deadline_steps != "fit" or STATE_KEY not in state.config_records:
        return None
    timer = RoundTimer.from_record(state.config_records[STATE_KEY])
    outer = cfg.solver_config().outer_steps
    if lead is not None:
        timer = replace(timer, startup=lead)
        one_step = lead + (timer.step_seconds(ratio, outer) if ratio in timer.levels else 0.0)
        if one_step > cfg.round_deadline:
            raise ValueError(f"the train message reached the ClientApp late ({lead:.1f} s gone, as the "
                             f"deadline counts them) and one outer step would end at {one_step:.1f} s, past "
                             f"round-deadline = {cfg.round_deadline:g} s: the node skips it")
    if ratio not in timer.levels:
        return None
    return timer.steps_within(ratio, cfg.round_deadline, outer)


def after_round(cfg: RunConfig, device: DeviceClass | None, state: RecordDict, ratio: float,
                metrics: Mapping[str, object], wall_seconds: float, startup: float = 0.0) -> dict[str, float]:
    """Train time, ``capacity='deadline'``: the metrics ``predicted-seconds`` (before the round),
    ``local-seconds`` (what it took: ``startup``, the seconds before the handler (the process's
    start, or :func:`message_lead`), plus the handler's wall time, or the device's compute time on
    the virtual clock), ``step-share`` (the share of the round's steps it ran) and ``next-ratio``;
    the timer in ``state`` learns from the round."""
    if STATE_KEY not in state.config_records:
        return {}
    timer = RoundTimer.from_record(state.config_records[STATE_KEY])
    seconds = (device.compute_seconds(float(metrics["flops"]), float(metrics["steps"]))  # type: ignore[arg-type]
               if device else wall_seconds)
    share = float(metrics["steps"]) / max(round_steps(cfg), 1)  # type: ignore[arg-type]
    predicted = timer.predict(ratio, share) if ratio in timer.levels else float("nan")
    startup = device.startup_s if device else startup
    timer = timer.observe(ratio, seconds, startup, share)
    state[STATE_KEY] = timer.to_record()
    return {"predicted-seconds": predicted, "local-seconds": seconds + startup, "step-share": share,
            "next-ratio": timer.pick(cfg.round_deadline, share=min_share(cfg))}


def profile_timer(task: BilevelTask, data: ClientData, cfg: RunConfig, device: DeviceClass | None,
                  startup: float = 0.0) -> RoundTimer:
    """Probe one outer step (the run's inner and v steps) at the ratio levels, the smallest first,
    up to the first whose round (``startup`` plus its outer steps) is predicted past
    ``round-deadline``: its counted FLOPs at the device's speed (the virtual clock) or its measured
    seconds after one warm-up at the smallest level (the real clock), times the outer steps of a
    round. A level above the last probed one is predicted in proportion to its ratio (our core's
    rounds grew less: 3.5x from 1/8 to 1, so the guess errs long) until the node trains it. A slow
    node thus probes only what it can train: on a device at 1/45 of our core, probing every level
    had kept the first round waiting 70 s. The timed probe runs under the run's own ``profile`` /
    ``profile-memory``, whose counters the round pays too (the FLOP counter made the default CNN's
    round 20 % longer at ratio 1 and 60 % at 1/8 on our core)."""
    levels, outer = tuple(sorted(set(cfg.ratio_levels), reverse=True)), cfg.solver_config().outer_steps
    counters = {"profile": cfg.profile, "profile_memory": cfg.profile and cfg.profile_memory,
                "one_outer_step": True}
    if device is None:
        probe_round(task, data, cfg, levels[-1], **counters)  # the warm-up
    probed: dict[float, float] = {}
    for ratio in reversed(levels):
        if device is not None:
            counted = probe_round(task, data, cfg, ratio, profile=True, one_outer_step=True)
            seconds = device.compute_seconds(float(counted["flops"]), float(counted["steps"]))  # type: ignore[arg-type]
        else:
            seconds = float(probe_round(task, data, cfg, ratio, **counters)["train-seconds"])  # type: ignore[arg-type]
        probed[ratio] = seconds * outer
        if 0 < cfg.round_deadline < startup + probed[ratio] * min_share(cfg):
            break
    top = max(probed)
    return RoundTimer(levels, tuple(probed.get(r, probed[top] * r / top) for r in levels))
