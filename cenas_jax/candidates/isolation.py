"""OS isolation of a sandbox worker: namespaces, read-only root, private tmpfs, privilege drop, rlimits.

What held on the machines this was designed on (DESIGN.md §3, Linux as root):
new net+mount+pid(+ipc+uts) namespaces, ``/`` made read-only (per mount,
recursively, so the host's mounts are untouched), private tmpfs on ``/tmp``
and ``/dev/shm``, a fresh ``/proc`` for the new pid namespace, jax/flax/optax
imported *before* the drop, then ``setgroups([])``, ``setgid``/``setuid`` to
an unprivileged uid and ``PR_SET_NO_NEW_PRIVS``; rlimits (address space, CPU,
processes, file size, no core dumps) apply because the uid is no longer 0.
Namespaces alone are not a sandbox for root (a root process in them can
remount ``/`` read-write again): the uid drop is what makes them hold.

Without root a user namespace gives namespaces and mounts, then every
capability is dropped. Where neither works (macOS, locked-down containers)
the worker runs with rlimits only, and ``describe_isolation`` says so.

The calls are made through libc with ctypes (Python 3.11 has no
``os.unshare``); all of this runs only inside worker processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import resource
import signal
import socket
import stat
import sys
from typing import Any

import cenas_jax

# Clone flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# mount_setattr(2): the same syscall number on every architecture (asm-generic table).
SYS_MOUNT_SETATTR = 442
MOUNT_ATTR_RDONLY = 0x1
AT_FDCWD = -100
AT_RECURSIVE = 0x8000

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# Each worker runs as its own unmapped uid, 0x7F000000 + its launcher's host pid (unique among live
# processes): no file on the system belongs to it (it can read only what everyone may read, like
# `nobody`), and RLIMIT_NPROC, which counts every thread of a uid, then bounds one worker alone
# rather than every worker of every evaluator on the machine sharing `nobody`'s count.
SANDBOX_UID_BASE = 0x7F000000
TRACER_UID_OFFSET = 0x01000000  # tracer uids: [0x80000000, 0x81000000), disjoint from the workers'
IN_SANDBOX_DATA_DIR = "/tmp/.cenas-data"  # where the parent's dataset directory appears, read-only
IN_SANDBOX_WORK_DIR = "/tmp/work"  # the worker's throw-away working directory

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def linux() -> bool:
    return sys.platform.startswith("linux")


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_lib().unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2)."""
    enc = lambda s: None if s is None else s.encode()  # noqa: E731 - a one-line local helper
    ret = _lib().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount({source!r} -> {target!r}, {fstype!r}, {flags:#x})")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


ACCELERATOR_WRITABLE = ("/dev", "/proc", "/sys")


def _clear_readonly(path: str) -> None:
    attr = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    ret = _lib().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(path.encode()),
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret != 0:
        mount(None, path, None, MS_BIND | MS_REMOUNT)


def make_tree_readonly(path: str = "/", keep: tuple[str, ...] = ()) -> None:
    """Mark every mount at or below ``path`` read-only in this mount namespace only.

    ``mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`` changes the per-mount
    flag, never the superblock, so the host keeps its read-write view. On
    kernels before 5.12 each mount is bind-remounted read-only instead.
    """
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    lib = _lib()
    ret = lib.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(path.encode()),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if ret == 0:
        for k in keep:
            if os.path.ismount(k):
                _clear_readonly(k)
        return
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EINVAL):
        raise OSError(err, f"mount_setattr({path!r}, rdonly): {os.strerror(err)}")
    # Old kernel: bind-remount each mount point read-only, keeping its nosuid/nodev/noexec
    # (a remount that drops a locked flag is refused in a user namespace).
    for point, options in _mount_points():
        if point != path and not point.startswith(path.rstrip("/") + "/"):
            continue
        if any(point == k or point.startswith(k + "/") for k in keep):
            continue
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        flags |= MS_NOSUID if "nosuid" in options else 0
        flags |= MS_NODEV if "nodev" in options else 0
        flags |= MS_NOEXEC if "noexec" in options else 0
        try:
            mount(None, point, None, flags)
        except OSError:
            if point == path:
                raise


def _mount_points() -> list[tuple[str, set[str]]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].replace("\\040", " ")
            out.append((point, set(parts[5].split(","))))
    return out


def prctl(option: int, arg: int = 0) -> int:
    return _check(_lib().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with ``sig`` when the parent dies (cleared by a uid change: call again after the drop)."""
    if linux():
        prctl(PR_SET_PDEATHSIG, int(sig))


def no_new_privs() -> bool:
    if not linux():
        return False
    try:
        return bool(prctl(PR_GET_NO_NEW_PRIVS))
    except OSError:
        return False


# ---------------------------------------------------------------------------
# The plan: what the worker's parent-side launcher decided, carried through fork
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IsolationPlan:
    """What a worker is to set up; ``mode`` is "full" (root), "userns" (no root) or "rlimits"."""

    mode: str
    data_dir: str  # the parent's dataset directory (host path)
    uid: int = 65534
    gid: int = 65534
    tmpfs_mb: int = 256
    expose: tuple[str, ...] = ()  # host paths the worker must read (interpreter, site-packages, package)
    # On a GPU host CUDA's cuInit fails (CUDA_ERROR_OPERATING_SYSTEM, measured on an H200 host) inside a
    # new pid namespace and under a read-only /dev, /proc or /sys: such a worker gets no pid namespace and
    # keeps those three mounts as they are; the uid drop still keeps it from writing anything root's.
    accelerator: bool = False


def sandbox_uid(launcher_pid: int) -> int:
    """The uid a worker drops to: unique per live worker (see ``SANDBOX_UID_BASE``)."""
    return SANDBOX_UID_BASE + (launcher_pid & 0xFFFFFF)


def tracer_uid(worker_uid: int) -> int:
    """The uid a worker's tracers run as (full mode): one of their own, so that a tracer cannot signal,
    trace or share files with the trainer it hands programs to."""
    return worker_uid + TRACER_UID_OFFSET


def hide_directory(path: str) -> None:
    """In a new mount namespace of this process, cover ``path`` with an empty read-only tmpfs.

    Needs CAP_SYS_ADMIN (root in full mode, the namespace's owner in userns mode); called by the
    zygote before it drops privileges, so that no tracer can read the datasets.
    """
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=16,mode=0555")


PR_SET_DUMPABLE = 4


def set_dumpable(on: bool) -> None:
    """Non-dumpable: /proc/PID/{mem,environ,fd,root} of this process become root's, and no ptrace attach."""
    if linux():
        prctl(PR_SET_DUMPABLE, 1 if on else 0)


def detect_mode(requested: str) -> str:
    """The isolation mode to use: ``requested`` ("auto" | "full" | "rlimits") resolved for this machine."""
    if requested == "rlimits" or not linux():
        return "rlimits"
    if os.geteuid() == 0:
        return "full"
    return "userns" if requested == "auto" else "full"


def python_paths() -> tuple[str, ...]:
    """Directories the worker's interpreter reads: prefixes, stdlib, site-packages, this package's root."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {p for p in sys.path if p and os.path.isdir(p)}
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(cenas_jax.__file__))))
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return tuple(sorted(os.path.realpath(p) for p in paths))


def _blocked_ancestor(path: str) -> str | None:
    """The top-most ancestor of ``path`` that others may not traverse (e.g. a 0700 /root), or None."""
    parts = os.path.realpath(path).split("/")[1:]
    cur = ""
    for part in parts:
        cur = f"{cur}/{part}"
        try:
            mode = os.stat(cur).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return cur
    return None


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _outermost(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _expose_through_blocked_dirs(paths: tuple[str, ...]) -> None:
    """Make ``paths`` readable by the sandbox uid where a private ancestor (0700 home) hides them.

    The hidden ancestor is covered by an empty tmpfs (so nothing else in that
    home is visible) and only the needed sub-trees are bound back into it; the
    whole tree is made read-only afterwards. Called as root in the new mount
    namespace, before the drop.
    """
    needed: dict[str, list[str]] = {}
    for p in paths:
        anc = _blocked_ancestor(p)
        if anc is not None and os.path.exists(p):
            needed.setdefault(anc, []).append(os.path.realpath(p))
    for anc, subs in needed.items():
        keep = [s for s in _outermost(subs) if s != anc]
        fds = {s: os.open(s, os.O_PATH | os.O_DIRECTORY) for s in keep}
        try:
            mount("tmpfs", anc, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
            for s, fd in fds.items():
                os.makedirs(s, mode=0o755, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", s, None, MS_BIND | MS_REC)
        finally:
            for fd in fds.values():
                os.close(fd)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(plan: IsolationPlan) -> str:
    """In the launcher process: new namespaces and the file-system view; returns the in-sandbox data dir.

    After this the launcher forks the pid-1 process (see ``worker.py``), which
    mounts ``/proc`` and forks the worker proper. Nothing here touches the
    host: mount propagation is made private before any mount.
    """
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | (0 if plan.accelerator else CLONE_NEWPID)
    if plan.mode == "userns":
        uid, gid = os.getuid(), os.getgid()
        unshare(flags | CLONE_NEWUSER)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    else:
        unshare(flags)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    data_fd = os.open(plan.data_dir, os.O_PATH | os.O_DIRECTORY)
    # The interpreter, site-packages or this package may live under /tmp or /dev/shm (a venv in a
    # clone under /tmp, as CI does): hold them open now and bind them back over the private tmpfs.
    under_tmpfs = [p for p in _outermost(list(plan.expose)) if _is_under(p, "/tmp") or _is_under(p, "/dev/shm")]
    held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in under_tmpfs if os.path.isdir(p)}
    try:
        if plan.mode == "full":
            _expose_through_blocked_dirs(plan.expose)
        make_tree_readonly("/", keep=ACCELERATOR_WRITABLE if plan.accelerator else ())
        size = f"size={plan.tmpfs_mb}m,nr_inodes=65536"
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,{size}")
        if os.path.isdir("/dev/shm"):
            mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,{size}")
        for path, fd in held.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.makedirs(IN_SANDBOX_DATA_DIR, mode=0o755)
        mount(f"/proc/self/fd/{data_fd}", IN_SANDBOX_DATA_DIR, None, MS_BIND)
        mount(None, IN_SANDBOX_DATA_DIR, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        os.close(data_fd)
        for fd in held.values():
            os.close(fd)
    os.makedirs(IN_SANDBOX_WORK_DIR, mode=0o700)
    if plan.mode == "full":
        os.chown(IN_SANDBOX_WORK_DIR, plan.uid, plan.gid)
    return IN_SANDBOX_DATA_DIR


def mount_fresh_proc() -> None:
    """In pid 1 of the new pid namespace: a /proc that shows only this namespace, read-only."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    try:
        make_tree_readonly("/proc")
    except OSError:
        pass  # the uid drop still keeps /proc/sys out of reach


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-worker resource limits (bytes and seconds); None leaves a limit as it is."""

    address_space: int | None  # RLIMIT_AS; None on accelerators (it breaks CUDA)
    cpu_soft: int
    cpu_hard: int
    processes: int | None  # RLIMIT_NPROC; counts every thread of the (unprivileged) uid
    file_size: int
    open_files: int = 1024


def apply_limits(limits: Limits) -> None:
    """setrlimit for the worker (hard = soft except CPU, whose soft limit is re-armed per task)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_soft, limits.cpu_hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = limits.open_files if hard == resource.RLIM_INFINITY else min(limits.open_files, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, cap) if soft != resource.RLIM_INFINITY else cap, cap))
    if limits.processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    if limits.address_space is not None:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        except (OSError, ValueError):
            if linux():
                raise  # macOS refuses to lower RLIMIT_AS; `cenas sandbox check` then reports it off


def rearm_cpu_limit(per_task_s: int) -> None:
    """Set the soft CPU limit to the CPU used so far plus ``per_task_s`` (never above the hard limit)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + per_task_s
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def drop_privileges(plan: IsolationPlan) -> None:
    """Become the sandbox uid (full) or shed every capability (userns); then no-new-privs.

    Also re-arms the parent-death signal, which the kernel clears on a
    credential change.
    """
    if plan.mode == "full":
        os.setgroups([])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise OSError("the uid drop did not take")
    elif plan.mode == "userns":
        _drop_capabilities()
    if linux():
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        set_parent_death_signal()
        install_seccomp()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """capset(2) to the empty set, and clear the bounding set (user-namespace mode)."""
    PR_CAPBSET_DROP = 24
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_lib().capset(ctypes.byref(header), data), "capset")


# ---------------------------------------------------------------------------
# seccomp: a deny-list of syscalls a model never needs (x86_64; elsewhere it is reported off)
# ---------------------------------------------------------------------------

_NR_SECCOMP_X86_64 = 317
_SECCOMP_FILTER_FLAG_TSYNC = 1
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x45, 0x06

# Kernel surface that namespaces, mounts, tracing, keyrings, BPF, io_uring and modules expose.
_DENIED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
    "personality": 135, "name_to_handle_at": 303, "open_by_handle_at": 304,
}  # fmt: skip
_NR_CLONE_X86_64 = 56
_NR_CLONE3_X86_64 = 435  # its flags live in a struct seccomp cannot read: ENOSYS makes libc use clone
CLONE_NEWCGROUP = 0x02000000
_CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP
)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_supported() -> bool:
    import platform

    return linux() and platform.machine() in ("x86_64", "AMD64")


def install_seccomp() -> bool:
    """Install the deny-list filter (EPERM; ENOSYS for clone3); False where unsupported. Needs no_new_privs."""
    if not seccomp_supported():
        return False
    eperm, enosys = _SECCOMP_RET_ERRNO | errno.EPERM, _SECCOMP_RET_ERRNO | errno.ENOSYS
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_BPF_RET_K, 0, 0, eperm),  # a foreign ABI (x32/i386 entry): refuse everything
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    for nr in sorted(_DENIED_X86_64.values()):
        prog += [(_BPF_JEQ_K, 0, 1, nr), (_BPF_RET_K, 0, 0, eperm)]
    prog += [(_BPF_JEQ_K, 0, 1, _NR_CLONE3_X86_64), (_BPF_RET_K, 0, 0, enosys)]
    # clone: refuse namespace flags (args[0], low 32 bits at offset 16).
    prog += [
        (_BPF_JEQ_K, 0, 3, _NR_CLONE_X86_64),
        (_BPF_LD_W_ABS, 0, 0, 16),
        (_BPF_JSET_K, 0, 1, _CLONE_NAMESPACE_FLAGS),
        (_BPF_RET_K, 0, 0, eperm),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    # seccomp(SET_MODE_FILTER, TSYNC): every thread, XLA's pool included (a prctl would filter only this one).
    ret = _lib().syscall(ctypes.c_long(_NR_SECCOMP_X86_64), ctypes.c_uint(1), ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC),
                         ctypes.byref(fprog))  # fmt: skip
    _check(ret, "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)")
    return True


# ---------------------------------------------------------------------------
# describe_isolation: probes run inside a worker (trusted code, after the drop)
# ---------------------------------------------------------------------------

LAYERS = (
    "net_namespace",
    "mount_namespace",
    "pid_namespace",
    "user_namespace",
    "readonly_root",
    "private_tmp",
    "uid_drop",
    "no_new_privs",
    "no_network",
    "no_remount",
    "rlimit_as",
    "rlimit_cpu",
    "rlimit_nproc",
    "rlimit_fsize",
    "seccomp",
)


def _try(fn) -> tuple[bool, str]:
    try:
        return True, str(fn())
    except OSError as e:
        return False, f"{type(e).__name__}: {e.strerror or e}"
    except Exception as e:  # a probe must never stop the report
        return False, f"{type(e).__name__}: {e}"


def _ns_id(kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return None


def describe_isolation(host_ns: dict[str, str | None], probe_paths: tuple[str, ...] = (), mode: str = "") -> dict:
    """Probe, from inside a worker, which isolation layers hold; ``{layer: {"active": bool, "detail": str}}``.

    ``host_ns``: the parent's ``/proc/self/ns/*`` links (to compare);
    ``probe_paths``: host paths the worker tries to create (the parent
    checks afterwards that none appeared).
    """
    report: dict[str, dict[str, Any]] = {}

    def put(layer: str, active: bool, detail: str) -> None:
        report[layer] = {"active": bool(active), "detail": detail}

    for layer, kind in (("net_namespace", "net"), ("mount_namespace", "mnt"), ("pid_namespace", "pid"),
                        ("user_namespace", "user")):  # fmt: skip
        mine = _ns_id(kind)
        host = host_ns.get(kind)
        put(layer, mine is not None and host is not None and mine != host, f"{mine} (parent {host})")
    if report["pid_namespace"]["active"]:
        report["pid_namespace"]["detail"] += f"; my pid {os.getpid()}"

    # Outside /tmp and /dev/shm (private tmpfs) every write must fail; the parent checks the host paths too.
    written = []
    for p in ("/cenas-probe", "/etc/cenas-probe", "/usr/cenas-probe", "/var/tmp/cenas-probe", *probe_paths):
        if p.startswith(("/tmp/", "/dev/shm/")):
            continue
        ok, why = _try(lambda p=p: open(p, "w").close() or p)
        if ok:
            written.append(p)
            _try(lambda p=p: os.remove(p))  # the write went through (rlimits mode): leave nothing behind
    put("readonly_root", not written, "writes outside the private tmpfs refused" if not written else f"wrote {written}")
    for p in probe_paths:  # hidden host paths under /tmp: writing lands in the private tmpfs, if anywhere
        if p.startswith(("/tmp/", "/dev/shm/")):
            _try(lambda p=p: os.makedirs(os.path.dirname(p), exist_ok=True) or open(p, "w").close())

    tmp_ok, tmp_why = _try(lambda: open("/tmp/cenas-probe", "w").write("x"))
    tmp_id = None
    try:
        tmp_id = os.stat("/tmp").st_dev
        root_id = os.stat("/").st_dev
    except OSError:
        root_id = None
    put("private_tmp", tmp_ok and tmp_id is not None and tmp_id != root_id and mode in ("full", "userns"),
        "tmpfs on /tmp and /dev/shm" if tmp_ok else tmp_why)

    put("uid_drop", os.getuid() != 0 and os.geteuid() != 0, f"uid {os.getuid()} euid {os.geteuid()}")
    put("no_new_privs", no_new_privs(), "PR_SET_NO_NEW_PRIVS")

    def connect():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(("1.1.1.1", 53))
        finally:
            s.close()
        return "connected"

    ok, why = _try(connect)
    ifaces = []
    try:
        ifaces = [name for _, name in socket.if_nameindex()]
    except OSError:
        pass
    put("no_network", not ok and set(ifaces) <= {"lo"}, f"connect: {why}; interfaces {ifaces}")

    ok, why = _try(lambda: mount(None, "/", None, MS_REMOUNT | MS_BIND) or "remounted / read-write")
    put("no_remount", not ok, why)

    def lim(res: int) -> str:
        soft, hard = resource.getrlimit(res)
        fmt = lambda v: "unlimited" if v == resource.RLIM_INFINITY else str(v)  # noqa: E731 - a one-line local helper
        return f"soft {fmt(soft)} hard {fmt(hard)}"

    for layer, res in (("rlimit_as", resource.RLIMIT_AS), ("rlimit_cpu", resource.RLIMIT_CPU),
                       ("rlimit_nproc", resource.RLIMIT_NPROC), ("rlimit_fsize", resource.RLIMIT_FSIZE)):  # fmt: skip
        hard = resource.getrlimit(res)[1]
        active = hard != resource.RLIM_INFINITY
        if res == resource.RLIMIT_NPROC:
            active = active and os.getuid() != 0  # root is not bound by it (DESIGN.md §3)
        put(layer, active, lim(res))

    seccomp = "0"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    seccomp = line.split()[1]
    except OSError:
        pass
    if seccomp == "2":
        ok, why = _try(lambda: unshare(CLONE_NEWUSER) or "unshare(CLONE_NEWUSER) allowed")
        put("seccomp", not ok, f"filter mode: mount/unshare/ptrace/bpf/io_uring/keyctl... refused ({why})")
    else:
        put("seccomp", False, f"mode {seccomp}: no filter (x86_64 only; namespaces and the uid drop still hold)")
    return report


def host_namespaces() -> dict[str, str | None]:
    """The calling process's namespace ids, to compare with a worker's."""
    return {kind: _ns_id(kind) for kind in ("net", "mnt", "pid", "user")}
