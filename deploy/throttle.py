"""Run a command under a CPU quota and a memory limit (Linux cgroups): one machine hosts slow devices.

    python -m deploy.throttle --cpu 0.25 --memory-mb 2048 --name node3 -- flower-supernode --insecure ...
    python -m deploy.throttle --check | --usage node3 | --remove node3

The first form creates the group ``rabo/<name>``, moves itself into it and ``exec``s the command, so
the command and all its children share the limits: ``--cpu`` is a fraction of one core (0.25 = 25 ms
per 100 ms; 2 = two cores), ``--memory-mb`` the memory (MiB, no swap) past which the OOM killer ends a
process. ``--check`` says which cgroup version is usable, or why none is. ``--usage`` prints what is
measured: the group's CPU-seconds, exited processes included (v2 ``cpu.stat`` usage_usec, v1
``cpuacct.usage``), the benchmarks' energy proxy; ``--remove`` deletes the group after its processes
exit. v2: groups in ``<root>/rabo/``, whose subtree_control enables ``+cpu +memory`` (no processes in
non-root groups with controller-enabled children). v1: ``rabo/<name>`` in the cpu and memory
hierarchies, beneath the caller's own groups so outside limits still apply. Needs root or ``--root``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupSupport", "Limits", "Throttle", "ThrottleUnavailable", "detect", "main"]

PERIOD_US = 100_000  # the CPU quota's period (µs)
ROOT = Path("/sys/fs/cgroup")
PARENT = "rabo"  # every group made here lives in a directory of this name
_HINT = "(run as root, or delegate a cgroup to this user)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ThrottleUnavailable(RuntimeError):
    """cgroups cannot be used here, or a group could not be set up; the message says why."""


@dataclass(frozen=True)
class Limits:
    """cpu: a fraction of one core (0.25; above 1 for several cores); memory_mb: MiB. None: no limit."""

    cpu: float | None = None
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        for name, value, low, hint in (("cpu", self.cpu, 0.01, "a fraction of one core, e.g. 0.25; >= 0.01"),
                                       ("memory_mb", self.memory_mb, 0, "MiB, e.g. 2048")):
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if value is not None and not (number and value > 0 and value >= low):
                raise ValueError(f"{name} must be a number > 0 ({hint}), got {value!r}")


@dataclass(frozen=True)
class CgroupSupport:
    """detect()'s answer: version 2, 1 or None (then `reason` says why) and each controller's ``rabo`` dir."""

    version: int | None
    reason: str
    cpu: Path | None = None
    memory: Path | None = None
    usage: Path | None = None


def _own_groups(proc: Path) -> dict[str, str]:
    """The caller's cgroup per v1 controller, from /proc/self/cgroup ("4:memory:/some/group")."""
    try:
        rows = [line.split(":", 2) for line in proc.read_text().splitlines() if line.count(":") >= 2]
    except OSError:
        return {}
    return {name: path for _, names, path in rows for name in names.split(",")}


def _v1_parent(root: Path, names: tuple[str, ...], needs: str, own: dict[str, str]) -> Path | None:
    """`<mount>[/<the caller's group>]/rabo` for the first v1 mount among `names` that has `needs`."""
    for name in names:
        mount = root / name
        if (mount / needs).is_file():
            nested = mount / own.get(name.split(",")[0], "/").lstrip("/")
            return (nested if nested.is_dir() else mount) / PARENT
    return None


def detect(root: Path = ROOT, proc: Path = Path("/proc/self/cgroup")) -> CgroupSupport:
    """Which cgroup hierarchy under `root` can carry a CPU quota and a memory limit, or why none."""
    root = Path(root)
    if (root / "cgroup.controllers").is_file():
        missing = {"cpu", "memory"} - set((root / "cgroup.controllers").read_text().split())
        parent = root / PARENT
        if missing:
            return CgroupSupport(None, f"cgroup v2 found but {root}/cgroup.controllers lacks "
                                       + " and ".join(sorted(missing)))
        if not os.access(parent if parent.is_dir() else root, os.W_OK):
            return CgroupSupport(None, f"cgroup v2 found but {root} is not writable {_HINT}")
        return CgroupSupport(2, f"cgroup v2: groups in {parent}", parent, parent, parent)
    own = _own_groups(proc)
    cpu = _v1_parent(root, ("cpu", "cpu,cpuacct", "cpuacct,cpu"), "cpu.cfs_quota_us", own)
    memory = _v1_parent(root, ("memory",), "memory.limit_in_bytes", own)
    if cpu is None and memory is None:
        return CgroupSupport(None, f"no usable cgroup hierarchy under {root}: neither v2 "
                                   f"({root}/cgroup.controllers) nor v1 ({root}/cpu, {root}/memory)")
    if cpu is None or memory is None:
        lacking = f"{root}/cpu/cpu.cfs_quota_us" if cpu is None else f"{root}/memory/memory.limit_in_bytes"
        return CgroupSupport(None, f"cgroup v1 found but it lacks {lacking}")
    for parent in (cpu, memory):
        if not os.access(parent if parent.is_dir() else parent.parent, os.W_OK):
            return CgroupSupport(None, f"cgroup v1 found but {parent.parent} is not writable {_HINT}")
    usage = cpu if (cpu.parent / "cpuacct.usage").is_file() else \
        _v1_parent(root, ("cpuacct",), "cpuacct.usage", own)
    where = f"in {usage}" if usage else "not readable (no cpuacct)"
    return CgroupSupport(1, f"cgroup v1: groups in {cpu} and {memory}, CPU usage {where}", cpu, memory, usage)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise ThrottleUnavailable(f"cannot write {text!r} to {path}: {err.strerror or err}") from None


class Throttle:
    """The cgroup `name` with `limits`: create(), add(pid), cpu_seconds(), remove()."""

    def __init__(self, name: str, limits: Limits | None = None, support: CgroupSupport | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"name must be 1 to 64 letters, digits, '_', '.' or '-', got {name!r}")
        self.support = detect() if support is None else support
        if self.support.version is None:
            raise ThrottleUnavailable(self.support.reason)
        self.name, self.limits = name, Limits() if limits is None else limits

    @property
    def dirs(self) -> list[Path]:  # the group's directory in each hierarchy (one on cgroup v2)
        parents = (self.support.cpu, self.support.memory, self.support.usage)
        return [parent / self.name for parent in dict.fromkeys(p for p in parents if p is not None)]

    def create(self) -> Throttle:
        """Make the group (or reuse it) and write its limits; returns self."""
        support, limits = self.support, self.limits
        assert support.cpu is not None and support.memory is not None
        try:
            for parent in (support.cpu.parent, support.cpu) if support.version == 2 else ():
                parent.mkdir(exist_ok=True)  # v2: <root> and rabo/ enable cpu, memory for their children
                have = (parent / "cgroup.subtree_control").read_text().split() \
                    if (parent / "cgroup.subtree_control").is_file() else []
                if missing := [f"+{name}" for name in ("cpu", "memory") if name not in have]:
                    _write(parent / "cgroup.subtree_control", " ".join(missing))
            for group in self.dirs:
                group.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ThrottleUnavailable(f"cannot create group {self.name!r}: {err}") from None
        cpu, memory = support.cpu / self.name, support.memory / self.name
        quota = None if limits.cpu is None else str(round(limits.cpu * PERIOD_US))
        size = None if limits.memory_mb is None else str(int(limits.memory_mb * 2**20))
        if support.version == 2:
            _write(cpu / "cpu.max", f"{quota or 'max'} {PERIOD_US}")
            _write(memory / "memory.max", size or "max")
            if (memory / "memory.swap.max").is_file():
                _write(memory / "memory.swap.max", "max" if size is None else "0")
            return self
        _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", quota or "-1")
        swap = memory / "memory.memsw.limit_in_bytes"  # memory + swap, never below memory.limit_in_bytes
        for path, value in ((swap, "-1"), (memory / "memory.limit_in_bytes", size), (swap, size)):
            if path != swap or path.is_file():
                _write(path, value or "-1")
        return self

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads; its future children follow) into the group."""
        for group in self.dirs:
            _write(group / "cgroup.procs", str(pid))

    def cpu_seconds(self) -> float | None:
        """CPU time the group's processes have used (seconds), None where it is not readable."""
        if self.support.usage is None:
            return None
        group = self.support.usage / self.name
        try:
            if self.support.version == 1:
                return int((group / "cpuacct.usage").read_text()) / 1e9
            stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
        except FileNotFoundError:
            raise ThrottleUnavailable(f"no group {self.name!r} in {self.support.usage}") from None
        return int(stat["usage_usec"]) / 1e6 if "usage_usec" in stat else None

    def remove(self) -> None:
        """Delete the group (its processes must have exited); a group that is gone is no error."""
        for group in [group for group in self.dirs if group.is_dir()]:
            try:
                group.rmdir()
            except OSError as err:
                raise ThrottleUnavailable(f"cannot remove {group}: {err.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    """The CLI (see the module docstring); on success without --check/--usage/--remove it execs."""
    parser = argparse.ArgumentParser(prog="python -m deploy.throttle", exit_on_error=False,
                                     usage="%(prog)s [OPTIONS] -- COMMAND [ARG ...] | --check | --usage NAME"
                                           " | --remove NAME", description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", type=float, help="CPU quota, a fraction of one core (0.25; 2 = two cores)")
    parser.add_argument("--memory-mb", type=float, help="memory limit in MiB (no swap)")
    parser.add_argument("--name", default=f"run{os.getpid()}", help="the group's name (default run<pid>)")
    parser.add_argument("--root", type=Path, default=ROOT, help=f"cgroup file system (default {ROOT})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="say which cgroup version is usable, or why not")
    mode.add_argument("--usage", metavar="NAME", help="print the CPU-seconds group NAME has used")
    mode.add_argument("--remove", metavar="NAME", help="delete group NAME (its processes have exited)")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    command = argv[split + 1:]
    try:
        args, extra = parser.parse_known_args(argv[:split])
        if extra:
            raise ValueError(f"unrecognized arguments: {' '.join(extra)} (is '--' before the command?)")
        support = detect(args.root)
        if args.check:
            print(support.reason)
            return 0 if support.version else 1
        if args.usage or args.remove:
            throttle = Throttle(args.usage or args.remove, None, support)
            if args.remove:
                throttle.remove()
            elif (seconds := throttle.cpu_seconds()) is None:
                raise ThrottleUnavailable(f"CPU usage is not readable here ({support.reason})")
            else:
                print(f"{seconds:.6f}")
            return 0
        limits = Limits(args.cpu, args.memory_mb)
        if not command:
            raise ValueError("no command: give it after '--', e.g. -- flower-supernode --insecure ...")
        if shutil.which(command[0]) is None:
            raise ValueError(f"command not found: {command[0]}")
        Throttle(args.name, limits, support).create().add(os.getpid())
        sys.stdout.flush()
        os.execvp(command[0], command)
    except (ValueError, OSError, argparse.ArgumentError, ThrottleUnavailable) as err:
        print(f"throttle: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
