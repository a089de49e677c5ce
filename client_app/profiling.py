"""Cost of a client's local work: wall time, FLOPs and peak tensor memory.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``. Peak memory is the largest amount
of tensor memory live at once during the work, above what was allocated before it: on CUDA from
the caching allocator's peak statistics, on CPU from the allocation events of the PyTorch
profiler (``profile_memory=True``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Cost:
    seconds: float = 0.0
    flops: int = 0
    peak_bytes: int = 0


def _cpu_peak(prof: profile) -> int:
    """Peak of the running sum of allocation (+) and free (-) events, in time order."""
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def _quiet_profile() -> Iterator[profile]:
    """The CPU memory profiler, without its chatter.

    Kineto's C++ side prints ``USDT ... profiler_start`` / ``profiler_stop`` (and, on a machine
    without a GPU, ``ERROR ... gpuGetDeviceCount failed``) to stderr at every start and stop,
    whatever ``KINETO_LOG_LEVEL`` says: hundreds of lines per run between the round lines. Only
    the start and the stop run with stderr silenced; the measured work does not."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


@contextmanager
def measure(device: torch.device, *, flops: bool = True, memory: bool = True) -> Iterator[Cost]:
    """Measure the block; the returned :class:`Cost` is filled when the block exits."""
    cost = Cost()
    with ExitStack() as stack:
        counter = stack.enter_context(FlopCounterMode(display=False)) if flops else None
        prof = None
        if memory and device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        elif memory:
            prof = stack.enter_context(_quiet_profile())
        start = time.perf_counter()
        yield cost
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        cost.seconds = time.perf_counter() - start
    if counter is not None:
        cost.flops = int(counter.get_total_flops())
    if memory and device.type == "cuda":
        cost.peak_bytes = int(torch.cuda.max_memory_allocated(device) - base)
    elif prof is not None:
        cost.peak_bytes = _cpu_peak(prof)
