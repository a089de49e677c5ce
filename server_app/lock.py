"""One server process per run directory: ``run.lock``, held for the whole run.

Two processes writing one run directory (a run resumed twice, by hand or by a restarted job)
would interleave their checkpoints and results. The lock is an exclusive ``flock`` on
``run.lock``, an open file that stays open for the run: the operating system releases it when
its process ends, however it ends, so a killed run never blocks the next. The file records the
holder (pid, host, start time) for the message of a process it refuses; a record left behind by
a process that ended without releasing the lock is taken over with a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging import WARNING
from pathlib import Path

from flwr.common import log

LOCK = "run.lock"


class RunLocked(RuntimeError):
    """Another process holds the run directory's lock, or the directory cannot be locked."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


def _acquire(path: Path) -> int:
    """The open, locked ``path``, holding this process's record; :class:`RunLocked` otherwise."""
    while True:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as err:  # a read-only directory, a symlink planted at run.lock
            raise RunLocked(f"cannot lock {path} ({type(err).__name__}: {err.strerror or err}); "
                            "the run writes its checkpoints and results there") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise RunLocked(f"{path.parent} is in use by another run ({holder}); wait for it to end, "
                            f"or if that process is gone, delete {path}") from None
        try:  # the file we locked may have been released and removed meanwhile: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if previous := os.pread(fd, 4096, 0).decode(errors="replace").strip():
        log(WARNING, "%s: taking over the lock of a run that ended without releasing it (%s)",
            path.parent, _holder(previous))
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """``with run_lock(run_dir):`` holds ``run_dir/run.lock``; :class:`RunLocked` if another
    process holds it. The file is removed on release, also when the run raises."""
    path = run_dir / LOCK
    fd = _acquire(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a process waiting on it re-checks the inode
        os.close(fd)
