"""Tracers: the only processes where candidate Python runs (DESIGN.md §3, "Integrity of scores").

A sandbox worker is two kinds of process:

    worker (trainer)  -- trusted code only: deserialises exported programs, trains and scores them
      zygote          -- forked by the worker before XLA starts its threads; imports done, no data
        tracer        -- forked by the zygote for one candidate; runs its code, exports, exits

The zygote is forked while the worker is still privileged: it hides the dataset directory behind
an empty read-only tmpfs in a mount namespace of its own (where namespaces exist), drops to a uid of
its own (``isolation.tracer_uid``; the trainer's uid differs), becomes non-dumpable (no
/proc/PID/mem, no ptrace, which seccomp also refuses) and applies the worker's rlimits. It keeps no
descriptor of the worker's: not the parent's task or result pipes, not the datasets.

Per candidate the worker makes a socket pair, passes one end to the zygote (SCM_RIGHTS) and
writes the task on the other. The tracer reads the task, runs the cheap stages (syntax, policy,
build, shape, budget, structure hash, degeneracy flags) and, for a trained evaluation, exports the
module's programs (``train/exported.py``); it writes stage frames, one result frame and then the
serialised programs, and exits. The zygote reaps it, kills whatever it left behind, and reports
its exit status on the control socket. A tracer never serves a second candidate.

Everything a tracer sends is untrusted input for the worker (see ``worker._collect_tracer``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

from cenas_jax.candidates import isolation

MAX_MESSAGE_CHARS = 2000
_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "bad_alloc", "Cannot allocate memory")


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ..."


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj, allow_nan=True).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> Any | None:
    """One frame from a trusted peer (the worker); None at EOF."""
    head = recv_exact(sock, 4)
    if head is None:
        return None
    body = recv_exact(sock, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


# ---------------------------------------------------------------------------
# The zygote
# ---------------------------------------------------------------------------


class Zygote:
    """The worker's handle on its zygote: ``trace(task)`` returns the connected socket of a new tracer."""

    def __init__(self, pid: int, ctl: socket.socket) -> None:
        self.pid = pid
        self.ctl = ctl

    def start_tracer(self, task: dict) -> socket.socket:
        """Ask for a tracer and send it ``task``; raises OSError when the zygote is gone."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.ctl, [b"t"], [theirs.fileno()])
        finally:
            theirs.close()
        try:
            send_frame(mine, task)
        except OSError:
            pass  # the tracer died before reading: its exit status says why
        return mine

    def exit_status(self, timeout_s: float = 30.0) -> int | None:
        """The last tracer's exit code (128 + signal when killed); None when the zygote does not answer."""
        self.ctl.settimeout(timeout_s)
        try:
            data = self.ctl.recv(64)
        except OSError:
            return None
        finally:
            self.ctl.settimeout(None)
        if not data:
            return None
        try:
            return int(data.decode())
        except ValueError:
            return None


def fork_zygote(spec: dict, plan: isolation.IsolationPlan, work_dir: str) -> Zygote:
    """Fork the zygote (call before XLA starts any thread, while still privileged in full mode)."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            parent_end.close()
            keep = {child_end.fileno(), 2}
            for fd in _open_fds():
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(2, 1)  # nothing the candidate prints reaches a pipe of the worker's
            _zygote_setup(spec, plan, work_dir)
        except BaseException:  # noqa: BLE001 - the worker sees EOF on the control socket and gives up
            traceback.print_exc()
            os._exit(3)
        _zygote_loop(child_end, plan)
        os._exit(0)
    child_end.close()
    return Zygote(pid, parent_end)


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _zygote_setup(spec: dict, plan: isolation.IsolationPlan, work_dir: str) -> None:
    """Hide the data, take a uid of its own, limits; the tracer inherits all of it."""
    hidden = False
    if plan.mode in ("full", "userns"):
        isolation.hide_directory(spec["in_data_dir"])
        hidden = True
    uid = isolation.tracer_uid(plan.uid) if plan.mode == "full" else plan.uid
    tracer_dir = os.path.join(os.path.dirname(work_dir.rstrip("/")) or "/tmp", f"tracer-{os.getpid()}")
    if plan.mode in ("full", "userns"):
        os.makedirs(tracer_dir, mode=0o700, exist_ok=True)
        if plan.mode == "full":
            os.chown(tracer_dir, uid, uid)
        os.chdir(tracer_dir)
    isolation.apply_limits(
        isolation.Limits(
            address_space=spec["address_space"],
            cpu_soft=spec["cpu_time_s"],
            cpu_hard=spec["cpu_time_s"] + 5,
            processes=len(os.listdir("/proc/self/task")) + spec["extra_processes"] if plan.mode == "full" else None,
            file_size=spec["file_size"],
        )
    )
    tplan = isolation.IsolationPlan(plan.mode, plan.data_dir, uid, uid, plan.tmpfs_mb, plan.expose, plan.accelerator)
    isolation.drop_privileges(tplan)
    isolation.set_dumpable(False)
    os.environ["CENAS_TRACER_DATA_HIDDEN"] = "1" if hidden else "0"


# A tracer runs with the zygote's uid, so candidate code can signal its parent (os.getppid()). The zygote ignores
# every signal a candidate could use to end it (SIGKILL and SIGSTOP cannot be ignored: the worker then replaces
# it); each tracer gets the handlers back before candidate code runs (SIGXCPU must still end it on its CPU limit).
_ZYGOTE_IGNORES = tuple(getattr(signal, n) for n in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2",
                                                      "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGTSTP", "SIGTTIN",
                                                      "SIGTTOU", "SIGPIPE", "SIGWINCH", "SIGURG", "SIGIO")
                        if hasattr(signal, n))


def _zygote_loop(ctl: socket.socket, plan: isolation.IsolationPlan) -> None:
    # Only the exit statuses of tracers are reaped here; SIGCHLD stays at its default.
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _ZYGOTE_IGNORES}
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(ctl, 16, 1)
        except OSError:
            os._exit(0)
        if not fds:
            os._exit(0)  # the worker closed the control socket
        conn_fd = fds[0]
        pid = os.fork()
        if pid == 0:
            ctl.close()
            code = 0
            try:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)
                _own_output()
                os.setpgid(0, 0)
                isolation.set_parent_death_signal()
                _tracer_main(socket.socket(fileno=conn_fd))
            except BaseException:  # noqa: BLE001 - a forked child: any failure, even SystemExit, is exit code 4
                code = 4
            os._exit(code)
        os.close(conn_fd)
        code = _wait(pid)
        _kill_leftovers(pid, plan)
        try:
            os.truncate(TRACER_OUTPUT, 0)  # nothing a tracer printed outlives it
        except OSError:
            pass
        try:
            ctl.send(str(code).encode())
        except OSError:
            os._exit(0)


# What a tracer prints goes to a file of its own in its directory, emptied when it ends: the file-size limit
# then bounds one candidate's output, and a chatty candidate cannot fill the worker's log for the next ones.
TRACER_OUTPUT = "tracer-output.log"


def _own_output() -> None:
    fd = os.open(TRACER_OUTPUT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 1
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def _kill_leftovers(pgid: int, plan: isolation.IsolationPlan) -> None:
    """Whatever the tracer started. In full mode the tracer uid is this zygote's alone: kill(-1) reaches
    all of it and nothing else (not the caller). Elsewhere its process group."""
    try:
        if plan.mode == "full":
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    while True:  # reap what was killed
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


# ---------------------------------------------------------------------------
# The tracer (candidate code runs from here on)
# ---------------------------------------------------------------------------


class _ModuleGuard:
    """Snapshots the namespaces of the modules candidates can reach; ``restore`` undoes assignments.

    In a disposable tracer this only keeps the candidate's own later stages (shape check, export) on
    the functions it was meant to use; nothing a candidate patches outlives its tracer.
    """

    def __init__(self, names: list[str]) -> None:
        self.saved = {n: (sys.modules[n], dict(vars(sys.modules[n]))) for n in sorted(set(names)) if n in sys.modules}

    def restore(self) -> None:
        for module, saved in self.saved.values():
            current = vars(module)
            for key, value in saved.items():
                if current.get(key, _MISSING) is not value:
                    current[key] = value


_MISSING = object()


def preload() -> None:
    """Imports and warm-ups the tracers need, none of which starts XLA (the zygote forks after this)."""
    import dataclasses  # noqa: F401 - allow-listed for candidates: load it now
    import functools  # noqa: F401 - imported to load it into the zygote before it forks
    import math  # noqa: F401 - imported to load it into the zygote before it forks
    import typing  # noqa: F401 - imported to load it into the zygote before it forks

    import flax.linen as nn  # noqa: F401 - imported to load it into the zygote before it forks
    import jax
    import jax.numpy as jnp
    import numpy  # noqa: F401 - imported to load it into the zygote before it forks
    import optax  # noqa: F401 - imported to load it into the zygote before it forks
    from jax import export  # noqa: F401 - imported to load it into the zygote before it forks

    jax.config.update("jax_enable_compilation_cache", False)
    from cenas_jax.candidates import contract, degenerate, policy  # noqa: F401 - imported to load it into the zygote before it forks
    from cenas_jax.candidates.worker import WARMUP_SOURCE
    from cenas_jax.train import depthwise, exported, pooling  # noqa: F401 - imported to load it into the zygote before it forks

    try:
        import flatbuffers  # noqa: F401 - imported to load it into the zygote before it forks
        from jax._src.export import serialization  # noqa: F401 - imported to load it into the zygote before it forks
    except ImportError:
        pass
    policy.check_policy(WARMUP_SOURCE)
    built = contract.build_net(WARMUP_SOURCE, 10)
    jax.eval_shape(lambda k: built.module.init(k, jnp.zeros((1, 8, 8, 1))), jax.ShapeDtypeStruct((2,), jnp.uint32))


def _tracer_main(conn: socket.socket) -> None:
    task = recv_frame(conn)
    if not isinstance(task, dict):
        return
    import jax

    # A tracer never touches an accelerator: it lowers for the trainer's platform on the CPU. No device is
    # visible to it either, so that JAX's CUDA plugin, which initialises CUDA when JAX starts, finds none.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    jax.config.update("jax_platforms", "cpu")
    nonce = task.get("nonce")
    me = os.getpid()

    def stage(name: str) -> None:
        if os.getpid() == me:
            send_frame(conn, {"type": "stage", "stage": name, "nonce": nonce})

    record, blobs = run_task(task, stage)
    if os.getpid() != me:  # a fork the candidate made: it must not answer
        os._exit(0)
    sizes = {k: len(v) for k, v in blobs.items()}
    send_frame(conn, dict(record, type="result", nonce=nonce, blob_sizes=sizes))
    for name in sorted(blobs):
        conn.sendall(blobs[name])
    conn.close()


def run_task(task: dict, report_stage: Callable[[str], None]) -> tuple[dict, dict[str, bytes]]:
    """All tracer stages for one candidate; every failure becomes a record. Returns (record, programs)."""
    from cenas_jax.candidates import contract, degenerate, policy
    from cenas_jax.candidates.errors import CandidateError
    from cenas_jax.config import TrainConfig, from_dict
    from cenas_jax.train import exported
    from cenas_jax.train.depthwise import fast_depthwise
    from cenas_jax.train.errors import TrainError
    from cenas_jax.train.pooling import fast_pooling

    rec: dict[str, Any] = {"status": "ok", "error_kind": None, "error_message": None, "stage": None}
    blobs: dict[str, bytes] = {}
    current = "syntax"
    guard = _ModuleGuard([*policy.ALLOWED_MODULES, "flax", "builtins", "optax", "cenas_jax.train.exported"])

    def enter(name: str) -> None:
        nonlocal current
        current = name
        rec["stage"] = name
        report_stage(name)

    if task.get("type") == "probe":  # `cenas sandbox check`: what a tracer sees (no candidate code runs)
        return {"status": "ok", "probe": _probe(task)}, blobs
    source = task["source"]
    num_classes = int(task["num_classes"])
    input_shape = tuple(task["input_shape"])
    try:
        if task.get("bypass") == "exec":
            enter("build")
            exec(compile(source, "<probe>", "exec"), {"__name__": "probe"})  # noqa: S102 - test-only path
            return rec, blobs
        enter("syntax")
        contract.parse_source(source)
        enter("policy")
        if task.get("bypass") != "policy":
            violations = policy.check_policy(source, max_bytes=int(task["max_source_bytes"]))
            if violations:
                raise CandidateError("policy", policy.format_violations(violations))
        enter("build")
        built = contract.build_net(source, num_classes)
        guard.restore()
        enter("shape")
        params, _ = contract.shape_check(built, input_shape, num_classes)
        rec["params"] = params
        enter("budget")
        if params > int(task["max_params"]):
            raise CandidateError("budget", f"{params:,} parameters exceed the budget of {int(task['max_params']):,}")
        rec["structure_hash"] = contract.structure_hash(built, input_shape)
        try:
            rec["degenerate"] = degenerate.degeneracy_flags(built, input_shape)
        except Exception:  # noqa: BLE001 - a diagnostic only
            rec["degenerate"] = None
        guard.restore()
        if not task["train"]:
            return rec, blobs
        enter("train")
        cfg = from_dict(TrainConfig, task["train_cfg"])
        shapes = exported.Shapes(**{**task["shapes"], "input_shape": tuple(task["shapes"]["input_shape"])})
        with fast_pooling(cfg.fast_pooling), fast_depthwise(cfg.fast_depthwise):
            meta, blobs = exported.export_programs(built.module, built.takes_train, shapes, cfg, task["platform"])
        rec["export"] = meta
        return rec, blobs
    except BaseException as e:  # noqa: BLE001 - candidate code may raise anything, SystemExit included
        kind, message = _classify(e, current, CandidateError, TrainError)
        rec.update(status="error", error_kind=kind, error_message=_short(message))
        return rec, {}


def _probe(task: dict) -> dict:
    out: dict[str, Any] = {"uid": os.getuid(), "data_dev": None, "data_entries": None}
    try:
        out["data_dev"] = os.stat(task["data_dir"]).st_dev
        out["data_entries"] = len(os.listdir(task["data_dir"]))
    except OSError as e:
        out["data_error"] = e.strerror
    return out


def _classify(e: BaseException, stage: str, candidate_error: type, train_error: type) -> tuple[str, str]:
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, candidate_error):
        return e.kind.value, e.message
    if isinstance(e, train_error):
        if any(m in e.message for m in _MEMORY_MARKERS):
            return "memory", e.message
        return {"nan": "nan", "shape": "shape", "export": "export"}.get(e.kind, "compile"), e.message
    if isinstance(e, MemoryError) or any(m in text for m in _MEMORY_MARKERS):
        return "memory", text
    by_stage = {"syntax": "syntax", "policy": "policy", "build": "build", "shape": "shape", "budget": "shape"}
    return by_stage.get(stage, "crash"), f"unexpected error in stage {stage}: {text}"
