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

Blocks above the threshold are still mapped afresh (``keep_freed_memory`` sets 256 MiB; an
``int``, mallopt's argument, caps it below 2 GiB). A LoRA fine-tuning step of SmolLM2-135M
(4 x 256 tokens) takes its 2.3 GiB of temporaries as one such block, so it faulted in 640
thousand 4 KiB pages a step (1.3-1.8 s of kernel time on the two cores). With glibc's ``glibc.malloc.hugetlb=1`` tunable, malloc asks
for transparent huge pages on what it maps (``madvise(MADV_HUGEPAGE)``, for kernels
whose THP mode is ``madvise``): 2 thousand faults a step and a 13-15% faster step
(DESIGN.md §4 "Fine-tuning speed"). A tunable is read when the process starts, so
the ``cenas`` command re-executes itself once with it set (``restart_with_hugepages``).
Sandbox workers are not given it: their steps' blocks fit under the threshold, and the
mnist5k evaluation benchmark showed no difference (0.32-0.35 either way).

Nothing here is needed for correctness; every function is a no-op where the
platform does not offer it (not Linux, not glibc).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Mapping

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


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
OPT_OUT = "CENAS_HUGEPAGES"  # "0": leave malloc's pages alone


def thp_mode(path: str = THP_ENABLED) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``); None where unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    if name != "glibc":
        return None
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return None
    return major, minor


def hugepage_environ(environ: Mapping[str, str], *, mode: str | None = None,
                     glibc: tuple[int, int] | None = None) -> dict[str, str] | None:
    """``environ`` with glibc's malloc told to use transparent huge pages, or None where that changes nothing.

    None when: not Linux; not glibc 2.35 or later (the first with the tunable); the kernel's THP mode is
    not ``madvise`` (``always`` already gives huge pages, ``never`` refuses them); ``GLIBC_TUNABLES``
    already sets the tunable; or ``CENAS_HUGEPAGES=0``. ``mode`` and ``glibc`` override what this
    machine reports (for tests).
    """
    if environ.get(OPT_OUT, "").strip() == "0" or not sys.platform.startswith("linux"):
        return None
    glibc = glibc if glibc is not None else _glibc_version()
    if glibc is None or glibc < (2, 35):
        return None
    if (mode if mode is not None else thp_mode()) != "madvise":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if HUGEPAGE_TUNABLE in tunables:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_TUNABLE}=1" if tunables else f"{HUGEPAGE_TUNABLE}=1"
    return env


def restart_with_hugepages(args: list[str]) -> None:
    """Re-execute this interpreter as ``python *args`` with huge pages asked for (``hugepage_environ``).

    Returns (doing nothing) where that changes nothing, where there is no interpreter path, or where
    ``exec`` fails; otherwise it does not return. The new process has the same pid, arguments and
    streams; its environment carries the tunable, so it does not restart again.
    """
    env = hugepage_environ(os.environ)
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *args], env)
    except OSError:
        return


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
