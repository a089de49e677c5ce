"""The server's clock in a round: the virtual clock's charge per reply, the deadline, next ratios.

On the virtual clock (``device-classes``) each train reply is charged the seconds its node's
device would take (:meth:`rabo_protocol.clock.DeviceClass.seconds`, from the FLOPs the node
counted and the bytes of both messages); a reply charged more than ``round-deadline`` +
``deadline-grace`` is late and left out, as the real clock's timeout leaves out a reply that has
not arrived. With ``capacity='deadline'`` a node's next ratio is the ``next-ratio`` its reply
names, when that is one of the run's ``ratio-levels``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from logging import WARNING

from flwr.app import Message
from flwr.common import log

from rabo_protocol import RunConfig
from rabo_protocol.clock import round_seconds
from rabo_protocol.wire import METRICS, message_bytes

from .profiles import NodeProfile

__all__ = ["RoundClock"]


class RoundClock:
    """Charges one round's replies on the virtual clock and updates deadline-sized ratios."""

    def __init__(self, cfg: RunConfig, sizing: str) -> None:
        self.closes_at = cfg.closes_at(sizing)
        self.devices = cfg.device_catalogue() if cfg.device_classes else {}
        self.levels = cfg.ratio_levels
        self.deadline_sized = cfg.capacity == "deadline"
        self._down: dict[int, int] = {}
        self.charged: dict[int, float] = {}
        """Node -> simulated seconds of its reply this round (virtual clock)."""
        self._late: set[int] = set()  # this round's replies late on the virtual clock

    def sent(self, messages: Iterable[Message]) -> None:
        """A new round: remember the bytes sent to each node."""
        self._down = {m.metadata.dst_node_id: message_bytes(m) for m in messages} if self.devices else {}
        self.charged, self._late = {}, set()

    def late(self, profile: NodeProfile | None, reply: Message) -> str | None:
        """Why ``reply`` misses the round on the virtual clock (None: in time, the real clock, or an
        error reply, which the reply parser reports with the client's own reason)."""
        device = self.devices.get(profile.device_class or "") if profile is not None else None
        if device is None or reply.has_error():
            return None
        node = reply.metadata.src_node_id
        metrics = reply.content.metric_records.get(METRICS, {})
        flops, steps = metrics.get("flops"), metrics.get("steps", 0)
        for key, value in (("flops", flops), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e300:
                return f"the virtual clock needs the reply's {key}, got {value!r}"
        seconds = device.seconds(float(flops), float(steps), self._down.get(node, 0),  # type: ignore[arg-type]
                                 message_bytes(reply))
        self.charged[node] = seconds
        if self.closes_at is not None and seconds > self.closes_at:
            self._late.add(node)
            return (f"late on the virtual clock: {seconds:.1f} s on a {device.name} > round-deadline "
                    f"+ deadline-grace = {self.closes_at:g} s")
        return None

    def metrics(self) -> dict[str, float]:
        """``simulated-seconds`` of the round (virtual clock only)."""
        if not self.devices:
            return {}
        return {"simulated-seconds": round_seconds(list(self.charged.values()), self.closes_at)}

    def resize(self, profiles: dict[int, NodeProfile], replied: Mapping[int, Mapping[str, object]],
               unanswered: Iterable[int]) -> None:
        """``capacity='deadline'``: a node whose reply was accepted trains next at the ``next-ratio``
        it names (one of ``ratio-levels``); a node that missed the round (``unanswered`` by the
        close, or late on the virtual clock) one level below its last, since its own timer's
        correction never reached the server."""
        if not self.deadline_sized:
            return
        for node, metrics in replied.items():
            ratio = metrics.get("next-ratio")
            if node in profiles and profiles[node].source == "deadline" and ratio is not None:
                if ratio in self.levels:
                    profiles[node] = replace(profiles[node], ratio=float(ratio))  # type: ignore[arg-type]
                else:
                    log(WARNING, "node %d: next-ratio=%r is not one of ratio-levels %s: ignored",
                        node, ratio, self.levels)
        for node in {*unanswered, *self._late}:
            profile = profiles.get(node)
            if profile is not None and profile.source == "deadline":
                lower = [r for r in self.levels if r < profile.ratio]
                profiles[node] = replace(profile, ratio=max(lower, default=profile.ratio))
