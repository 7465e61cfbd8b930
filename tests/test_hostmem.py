"""Host tuning of worker processes (cenas_jax/hostmem.py): malloc keeps freed blocks, cores are pinned."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from cenas_jax import hostmem

# XLA:CPU takes a program's temporaries as one block, tens of MiB for a small CNN, from a thread of its own.
# Here: a thread allocates, touches and frees a 40 MiB block 20 times; print the minor page faults it took.
_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from cenas_jax import hostmem
    if sys.argv[1] == "tuned":
        assert hostmem.keep_freed_memory() >= 64 << 20
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    n = 40 << 20
    def rounds():
        for _ in range(20):
            p = libc.malloc(n)
            ctypes.memset(p, 1, n)
            libc.free(p)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = threading.Thread(target=rounds)
    t.start()
    t.join()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_stay_in_the_heap_instead_of_being_unmapped():
    pages = (40 << 20) // os.sysconf("SC_PAGE_SIZE")
    default, tuned = _faults("default"), _faults("tuned")
    # By default glibc maps a block above 32 MiB afresh each time, and the kernel zeroes every page again;
    # tuned, the block is re-used from the heap: its pages fault in once.
    assert default >= 15 * pages, (default, tuned)
    assert tuned < 3 * pages, (default, tuned)


def test_parse_cores():
    assert hostmem.parse_cores("0") == (0,)
    assert hostmem.parse_cores("0,2-4, 7") == (0, 2, 3, 4, 7)
    assert hostmem.parse_cores("1,1") == (1,)
    for bad in ("a", "3-1", "-2", "1-x"):
        with pytest.raises(ValueError, match="bad core list"):
            hostmem.parse_cores(bad)


def test_pin_to_cores_binds_the_process():
    core = min(os.sched_getaffinity(0))
    code = f"import os; from cenas_jax import hostmem; print(hostmem.pin_to_cores([{core}]), sorted(os.sched_getaffinity(0)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out[0] == "True" and out[1].strip() == f"[{core}]"
    assert hostmem.pin_to_cores([]) is False
