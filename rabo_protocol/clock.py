"""Device classes and the virtual clock: how long a client's round would take on a given device.

Flower's simulation runs every client on the host, at the host's speed. The virtual clock gives
each simulated node a :class:`DeviceClass` (``device-classes``, cycled by partition id like
``ratio-levels``, or a node's own ``device-class``) and charges each train reply

    seconds = startup-s + FLOPs / (gflops x 1e9) + steps x step-ms / 1000
              + 8 x bytes down / (down-mbps x 1e6) + 8 x bytes up / (up-mbps x 1e6) + poll-s

from the FLOPs the node counted (``FlopCounterMode``), its optimizer steps and the serialized bytes
of the two messages. ``startup-s`` is what a message costs before any work: a SuperNode starts a
new ClientApp process per message, whose imports took 2.3 s of CPU on our reference core.
``step-ms`` is the fixed cost of a step (Python, kernel dispatch, small tensors): without it a FLOP
count makes the CNN's 1/8 submodel 39x faster than the full one, where our reference core measured
3.3x (docs/results.md, section 10). ``poll-s`` is the interval at which the device's SuperNode
asks for messages (Flower 1.42: 3 s, hard-coded; 0 where nothing polls): a message waits half of
it on average before the node sees it, and the reply half of it before the node's next pass
pushes it, so the clock charges one interval (the node does not size its work by it: the grace
covers it).
A round lasts as long as its slowest client, or until it closes at ``round-deadline`` +
``deadline-grace`` (:func:`round_seconds`). What it ignores: the host's data loading and model
building on the device, latency, contention, thermal throttling, and the server's own time.

>>> laptop = DeviceClass("laptop", gflops=9.0, down_mbps=80.0, up_mbps=40.0, step_ms=2.0,
...                      startup_s=2.5)
>>> round(laptop.seconds(flops=9e9, steps=100, bytes_down=10**6, bytes_up=10**6), 3)
4.0
>>> polled = DeviceClass("laptop", gflops=9.0, down_mbps=80.0, up_mbps=40.0, step_ms=2.0,
...                      startup_s=2.5, poll_s=3.0)  # behind a Flower 1.42 SuperNode
>>> round(polled.seconds(flops=9e9, steps=100, bytes_down=10**6, bytes_up=10**6), 3)
7.0
>>> round_seconds([1.3, 4.0], closes_at=3.0), round_seconds([1.3, 2.0], closes_at=3.0)
(3.0, 2.0)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SHIPPED", "DeviceClass", "load_device_classes", "round_seconds"]

KEYS = frozenset({"gflops", "down-mbps", "up-mbps", "step-ms", "startup-s", "poll-s", "source"})
"""The keys a device class's table may have."""
SHIPPED = Path(__file__).with_name("devices.toml")
"""The device classes that ship with the app (phone, single-board computer, laptop), with sources."""


@dataclass(frozen=True)
class DeviceClass:
    """A device's effective training speed and its link's bandwidth."""

    name: str
    gflops: float
    """FLOP/s (x 1e9) a local round attains on the device."""
    down_mbps: float
    up_mbps: float
    step_ms: float = 0.0
    """Fixed milliseconds per optimizer step, whatever its FLOPs."""
    startup_s: float = 0.0
    """Seconds a message costs before any work (the ClientApp process's start)."""
    poll_s: float = 0.0
    """Seconds between the device's SuperNode's polls: a message's two waits, on average."""
    source: str = ""

    def compute_seconds(self, flops: float, steps: float = 0.0) -> float:
        return flops / (self.gflops * 1e9) + steps * self.step_ms / 1000

    def transfer_seconds(self, bytes_down: float, bytes_up: float) -> float:
        return 8 * bytes_down / (self.down_mbps * 1e6) + 8 * bytes_up / (self.up_mbps * 1e6)

    def seconds(self, flops: float, steps: float, bytes_down: float, bytes_up: float) -> float:
        """Seconds of a train round: receive the submodel, start, compute, send the reply, and the
        SuperNode's two waits for its poll."""
        transfer = self.transfer_seconds(bytes_down, bytes_up)
        return self.startup_s + self.compute_seconds(flops, steps) + transfer + self.poll_s


def _number(table: Mapping[str, object], key: str, where: str, *, optional: bool = False) -> float:
    """``table[key]``: a positive number, or (``optional``) a non-negative one defaulting to 0."""
    value = table.get(key, 0.0 if optional else None)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (value >= 0 if optional else value > 0) and value < float("inf")):  # type: ignore[operator]
        kind = "non-negative" if optional else "positive"
        raise ValueError(f"{where}: '{key}' must be a {kind} number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def load_device_classes(path: str | Path = "") -> dict[str, DeviceClass]:
    """The device classes of a TOML file (default: :data:`SHIPPED`), one table per class with
    ``gflops``, ``down-mbps``, ``up-mbps``, optionally ``step-ms``, ``startup-s`` and ``poll-s``
    (default 0) and ``source``.
    ValueError naming the file, class and key that is wrong."""
    file = Path(path).expanduser() if path else SHIPPED
    try:
        tables = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"cannot read device profiles {file}: {err}") from None
    classes = {}
    for name, table in tables.items():
        where = f"{file.name} [{name}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where}: expected a table of keys, got {table!r}")
        if unknown := set(table) - KEYS:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        speeds = (_number(table, k, where) for k in ("gflops", "down-mbps", "up-mbps"))
        classes[name] = DeviceClass(name, *speeds, step_ms=_number(table, "step-ms", where, optional=True),
                                    startup_s=_number(table, "startup-s", where, optional=True),
                                    poll_s=_number(table, "poll-s", where, optional=True),
                                    source=str(table.get("source", "")))
    if not classes:
        raise ValueError(f"device profiles {file} define no device class")
    return classes


def round_seconds(client_seconds: Sequence[float], closes_at: float | None) -> float:
    """A round's simulated length: its slowest client's, but no longer than ``closes_at`` (the
    deadline plus grace, after which the server closes the round; None: it waits for everyone)."""
    longest = max(client_seconds, default=0.0)
    return longest if closes_at is None else min(longest, closes_at)
