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


def test_hugepage_environ_adds_the_tunable_only_where_it_changes_something():
    new = hostmem.hugepage_environ({"A": "1"}, mode="madvise", glibc=(2, 36))
    assert new == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Other tunables are kept, the new one appended.
    kept = hostmem.hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, mode="madvise", glibc=(2, 36))
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # Nothing to do: THP always on or off, a glibc without the tunable, the tunable already set, opted out.
    assert hostmem.hugepage_environ({}, mode="always", glibc=(2, 36)) is None
    assert hostmem.hugepage_environ({}, mode="never", glibc=(2, 36)) is None
    assert hostmem.hugepage_environ({}, mode="madvise", glibc=(2, 34)) is None
    assert hostmem.hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, mode="madvise", glibc=(2, 36)) is None
    assert hostmem.hugepage_environ({"CENAS_HUGEPAGES": "0"}, mode="madvise", glibc=(2, 36)) is None


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hostmem.thp_mode(str(f)) == "madvise"
    f.write_text("garbage\n")
    assert hostmem.thp_mode(str(f)) is None
    assert hostmem.thp_mode(str(tmp_path / "absent")) is None


# A block far above the mmap threshold (as a LoRA step's 2.3 GiB of temporaries are): malloc maps it afresh
# each time. Print the minor page faults of touching one 64 MiB block once.
_BIG_BLOCK = textwrap.dedent("""
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    n = 64 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(libc.malloc(n), 1, n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(hostmem.hugepage_environ({}) is None, reason="this machine's glibc or kernel offers no THP by madvise")
def test_the_tunable_makes_malloc_fault_in_huge_pages():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}

    def faults(e):
        out = subprocess.run([sys.executable, "-c", _BIG_BLOCK], capture_output=True, text=True, check=True, env=e)
        return int(out.stdout.split()[-1])

    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    plain, huge = faults(env), faults(hostmem.hugepage_environ(env))
    assert plain >= pages // 2, (plain, huge)  # one fault per 4 KiB page
    assert huge < plain // 8, (plain, huge)  # one per 2 MiB page (and the block's unaligned ends)


_RESTART = textwrap.dedent("""
    import os, sys
    from cenas_jax import hostmem
    print("pid", os.getpid(), flush=True)
    hostmem.restart_with_hugepages(["-c", "import os; print('restarted', os.getpid(), os.environ.get('GLIBC_TUNABLES'))"])
    print("not restarted", os.environ.get("GLIBC_TUNABLES"))
""")


def _restart(env):
    out = subprocess.run([sys.executable, "-c", _RESTART], capture_output=True, text=True, check=True, env=env)
    return out.stdout.split()


def test_restart_with_hugepages_execs_once_with_the_tunable_and_respects_the_opt_out():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}
    words = _restart(env)
    if hostmem.hugepage_environ(env) is None:
        assert words[2:4] == ["not", "restarted"], words
    else:
        # The same process (exec keeps the pid), now with the tunable; it does not restart a second time.
        assert words == ["pid", words[1], "restarted", words[1], "glibc.malloc.hugetlb=1"], words
    assert _restart({**env, hostmem.OPT_OUT: "0"})[2:] == ["not", "restarted", "None"]
    already = {**env, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert _restart(already)[2:] == ["not", "restarted", "glibc.malloc.hugetlb=0"]


def test_the_cenas_command_restarts_itself_through_the_module(monkeypatch):
    from cenas_jax import cli

    calls = []
    monkeypatch.setattr(hostmem, "restart_with_hugepages", lambda args: calls.append(args))
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/cenas", "--version"])
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert stop.value.code == 0
    # Before anything else ran: `python -m cenas_jax` with the same arguments.
    assert calls == [["-m", "cenas_jax", "--version"]]
