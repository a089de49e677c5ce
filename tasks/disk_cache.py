"""Arrays a node derives from the run's dataset, kept on disk between ClientApp processes.

A Flower SuperNode runs every message in a new ``flwr-clientapp`` process, so whatever a node
loaded or computed for the previous message is gone: parsing the packaged MNIST digits and
partitioning them (HF ``datasets``) cost 1.8 s of CPU per message on our reference core, which a
device at 1/8 of a core pays for 15 s every round (docs/results.md, section 10). The arrays are
stored under ``<data-dir>/cache/`` keyed by what they depend on and by the source of the modules
that compute them (a change of the partitioning code is a new key, never a stale partition); a
directory that cannot be written is no error, only no cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_DATA_DIR", "cached_arrays"]

DEFAULT_DATA_DIR = "~/.cache/rabo-data"
"""Where an empty ``data-dir`` keeps the cache (the run config's default ``data-dir``)."""

_SOURCES = ("datasets.py", "partition.py", "partitioners.py", "budget_partitioner.py", "disk_cache.py")
_CODE = hashlib.sha256(b"".join((Path(__file__).with_name(n)).read_bytes() for n in _SOURCES)).hexdigest()


Arrays = dict[str, np.ndarray]


def cached_arrays(data_dir: str, key: str, build: Callable[[], Arrays]) -> Arrays:
    """``build()``, or the arrays an earlier call with the same ``key`` stored under ``data_dir``
    (empty: :data:`DEFAULT_DATA_DIR`)."""
    digest = hashlib.sha256(f"{_CODE} {key}".encode()).hexdigest()[:24]
    path = Path(data_dir or DEFAULT_DATA_DIR).expanduser() / "cache" / f"{digest}.npz"
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError):  # absent, or cut short by a crash: build it again
        pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, path)  # atomic: concurrent nodes never read half a file
    except OSError:
        pass
    return arrays
