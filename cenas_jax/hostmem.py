"""Host-process tuning for long-running JAX processes on CPU: keep freed memory, pin to cores.

XLA:CPU allocates every temporary buffer of a program with ``malloc`` and frees
it when the program returns. glibc serves blocks above its mmap threshold
(128 KiB at first, raised dynamically up to 32 MiB) with a fresh ``mmap`` and
gives them back with ``munmap`` on free, so each training step maps, faults in
(the kernel zeroes every page) and unmaps its activations again. Measured on
this project's ResNet benchmark step (batch 64, 32x32x3, one core): 2.4 million
minor page faults and 13% of the time in the kernel over 150 steps; with the
threshold raised to 64 MiB and trimming deferred, 128 thousand faults and
0.4% — the step went from 110-120 ms to 98 ms, and two workers side by side
from 129 ms each to 96 ms (DESIGN.md §3 "Pool scaling on CPU").

Nothing here is needed for correctness; every function is a no-op where the
platform does not offer it (not Linux, not glibc).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory(mmap_threshold_mb: int = 256) -> int:
    """Serve blocks below ``mmap_threshold_mb`` from the heap and keep up to 256 MiB of freed heap.

    Returns the mmap threshold set, in bytes (0 when glibc's ``mallopt`` is unavailable). glibc refuses
    thresholds above its own maximum, so halving from ``mmap_threshold_mb`` down to 32 MiB finds the largest
    it accepts. Setting the threshold also turns glibc's dynamic adjustment off.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return 0
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mb = int(mmap_threshold_mb)
    while mb >= 32:
        if mallopt(_M_MMAP_THRESHOLD, mb << 20) == 1:
            mallopt(_M_TRIM_THRESHOLD, max(TRIM_THRESHOLD, mb << 20))
            return mb << 20
        mb //= 2
    return 0


def parse_cores(text: str) -> tuple[int, ...]:
    """``"0,2-3"`` -> (0, 2, 3). Raises ValueError naming the bad part."""
    cores: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"bad core list {text!r}: {part!r} is not a core number or a range a-b") from None
        if a < 0 or b < a:
            raise ValueError(f"bad core list {text!r}: {part!r} is not a non-negative ascending range")
        cores.extend(range(a, b + 1))
    return tuple(dict.fromkeys(cores))


def pin_to_cores(cores: Iterable[int]) -> bool:
    """Bind this process (and the threads it starts later) to ``cores``; False where it cannot."""
    wanted = set(cores)
    if not wanted or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, wanted)
    except OSError:
        return False
    return True
