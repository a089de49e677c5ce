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
"""

from __future__ import annotations

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

__all__ = ["RoundTimer", "after_round", "deadline_ratio", "node_device", "profile_timer", "startup_seconds"]

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

    def predict(self, ratio: float) -> float:
        return self.startup + self.base[self.levels.index(ratio)] * self.factor

    def pick(self, deadline: float, cap: float | None = None) -> float:
        """The largest level <= ``cap`` (default: the timer's) predicted to finish within
        ``deadline`` (else the smallest such level: the node will be late, and the server closes
        the round without it)."""
        cap = self.cap if cap is None else cap
        fitting = [r for r in self.levels if r <= cap] or [min(self.levels)]
        return next((r for r in fitting if self.predict(r) <= deadline), fitting[-1])

    def observe(self, ratio: float, seconds: float, startup: float = 0.0) -> RoundTimer:
        """The timer after a round at ``ratio`` whose handler took ``seconds`` and whose process
        spent ``startup`` seconds before it (unchanged for an unknown ratio)."""
        if ratio not in self.levels or seconds <= 0:
            return self
        return replace(self, factor=0.5 * self.factor + 0.5 * seconds / self.base[self.levels.index(ratio)],
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
    timer = replace(profile_timer(task, data, cfg, device), cap=cap,
                    startup=device.startup_s if device else startup)
    state[STATE_KEY] = timer.to_record()
    return timer.pick(cfg.round_deadline)


def after_round(cfg: RunConfig, device: DeviceClass | None, state: RecordDict, ratio: float,
                metrics: Mapping[str, object], wall_seconds: float, startup: float = 0.0) -> dict[str, float]:
    """Train time, ``capacity='deadline'``: the metrics ``predicted-seconds`` (before the round),
    ``local-seconds`` (what it took: the process's ``startup`` plus the handler's wall time, or the
    device's compute time on the virtual clock) and ``next-ratio``; the timer in ``state`` learns
    from the round."""
    if STATE_KEY not in state.config_records:
        return {}
    timer = RoundTimer.from_record(state.config_records[STATE_KEY])
    seconds = (device.compute_seconds(float(metrics["flops"]), float(metrics["steps"]))  # type: ignore[arg-type]
               if device else wall_seconds)
    predicted = timer.predict(ratio) if ratio in timer.levels else float("nan")
    startup = device.startup_s if device else startup
    timer = timer.observe(ratio, seconds, startup)
    state[STATE_KEY] = timer.to_record()
    return {"predicted-seconds": predicted, "local-seconds": seconds + startup,
            "next-ratio": timer.pick(cfg.round_deadline)}


def profile_timer(task: BilevelTask, data: ClientData, cfg: RunConfig,
                  device: DeviceClass | None) -> RoundTimer:
    """Probe one outer step (the run's inner and v steps) at every ratio level: its counted FLOPs
    at the device's speed (the virtual clock) or its measured seconds after a warm-up (the real
    clock), times the outer steps of a real round. The timed probe runs under the run's own
    ``profile`` / ``profile-memory``, whose counters the round pays too (the FLOP counter made the
    default CNN's round 20 % longer at ratio 1 and 60 % at 1/8 on our core)."""
    levels, base = tuple(sorted(set(cfg.ratio_levels), reverse=True)), []
    for ratio in levels:
        counted = probe_round(task, data, cfg, ratio, profile=True, one_outer_step=True)  # also the warm-up
        if device is not None:
            seconds = device.compute_seconds(float(counted["flops"]), float(counted["steps"]))  # type: ignore[arg-type]
        else:
            timed = probe_round(task, data, cfg, ratio, profile=cfg.profile,
                                profile_memory=cfg.profile and cfg.profile_memory, one_outer_step=True)
            seconds = float(timed["train-seconds"])  # type: ignore[arg-type]
        base.append(seconds * cfg.solver_config().outer_steps)
    return RoundTimer(levels, tuple(base))
