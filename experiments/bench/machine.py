"""What the machine a benchmark runs on is and can do: printed at the start of ``make bench-*``."""

from __future__ import annotations

import os
import platform
import time


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_limits() -> dict:
    """What this machine can do: memory copy bandwidth (GB/s) and fp32 GEMM (GFLOP/s), best of 3."""
    import numpy as np

    src = np.ones(64 * 2**20, np.float32)  # 256 MB
    dst = np.empty_like(src)
    copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(3))
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    gemm = min(_timed(lambda: a @ a) for _ in range(3))
    return dict(copy_gb_s=2 * src.nbytes / copy / 1e9, gemm_gflop_s=2 * 2048**3 / gemm / 1e9)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line: CPU, cores, load average (1 and 5 min), copy bandwidth and GEMM rate."""
    load1, load5, _ = os.getloadavg()
    lim = machine_limits()
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load1:.2f} (5 min {load5:.2f}); "
            f"copy {lim['copy_gb_s']:.1f} GB/s, fp32 GEMM {lim['gemm_gflop_s']:.0f} GFLOP/s (numpy, all cores)")
