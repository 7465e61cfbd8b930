"""The sandbox worker process: sets up its isolation, then evaluates candidates sent by the parent.

Process tree of one worker (full isolation; see ``isolation.py``):

    launcher  (host pid, root)  -- watches the lifeline pipe; EOF (parent died) -> kill everything
      init    (pid 1 in a new pid namespace) -- mounts /proc, reaps, dies with the launcher
        worker (pid 2)  -- imports jax/flax/optax, sets rlimits, drops to nobody, serves tasks

When pid 1 exits the kernel kills every process in the namespace, so a fork
bomb or a daemonised child cannot outlive its worker. The parent kills the
launcher's process group on a timeout. In rlimits mode the launcher forks
the worker directly (no namespaces).

Wire protocol (both directions): 4-byte big-endian length + UTF-8 JSON. JSON,
never pickle, flows from the worker to the parent: the worker runs untrusted
code and the parent must not deserialise objects from it.

This module imports no JAX at module level: the parent imports it for the
framing helpers, and the launcher forks before anything heavy is loaded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import time
import traceback
import zlib
from typing import Any

from cenas_jax.candidates import isolation

MAX_FRAME_BYTES = 1 << 20  # a worker's message larger than this is a protocol violation
MAX_MESSAGE_CHARS = 2000
WARMUP_SOURCE = """
import flax.linen as nn
import jax.numpy as jnp

class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.1, deterministic=not train)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
"""


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------


def encode_frame(obj: Any) -> bytes:
    data = json.dumps(obj, allow_nan=True).encode()
    return struct.pack(">I", len(data)) + data


def write_frame(fd: int, obj: Any) -> None:
    """Write one message (blocking)."""
    view = memoryview(encode_frame(obj))
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any | None:
    """Read one message (blocking); None at EOF. Used by the worker, which trusts the parent."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _read_exact(fd, n)
    return None if body is None else json.loads(body)


class FrameBuffer:
    """Incremental, size-capped decoder for the parent side (the worker is untrusted)."""

    def __init__(self, cap: int = MAX_FRAME_BYTES) -> None:
        self.buf = bytearray()
        self.cap = cap

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the complete messages. Raises ValueError on an oversized or bad frame."""
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if n > self.cap:
                raise ValueError(f"worker sent a {n}-byte message (limit {self.cap})")
            if len(self.buf) < 4 + n:
                break
            body = bytes(self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            try:
                msg = json.loads(body)
            except Exception as e:  # noqa: BLE001 - any decode error (RecursionError from deep nesting too)
                raise ValueError(f"worker sent an undecodable message ({type(e).__name__})") from None
            if not isinstance(msg, dict):
                raise ValueError("worker sent a message that is not an object")
            out.append(msg)
        if len(self.buf) > self.cap + 4:
            raise ValueError("worker sent an oversized message")
        return out


# ---------------------------------------------------------------------------
# Launcher / init: the process tree
# ---------------------------------------------------------------------------


def _exit_code(status: int) -> int:
    """Encode a child's wait status as an exit code: 128 + signal, or the exit code."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def main() -> None:
    """Entry point of ``python -I -c ... main()`` with one JSON argument (the worker spec)."""
    spec = json.loads(sys.argv[1])
    lifeline = spec["fd_lifeline"]
    results = spec["fd_results"]
    plan = isolation.IsolationPlan(
        mode=spec["mode"],
        data_dir=spec["data_dir"],
        uid=isolation.sandbox_uid(os.getpid()),
        gid=isolation.sandbox_uid(os.getpid()),
        tmpfs_mb=spec["tmpfs_mb"],
        expose=tuple(spec["expose"]),
    )
    notes: list[str] = []
    data_dir = plan.data_dir
    if plan.mode in ("full", "userns"):
        try:
            data_dir = isolation.enter_namespaces(plan)
        except OSError as e:
            if spec["requested"] == "full":
                write_frame(results, {"type": "fatal", "message": f"full isolation failed: {e}"})
                os._exit(3)
            notes.append(f"namespaces unavailable ({e}); running with rlimits + policy only")
            plan = isolation.IsolationPlan("rlimits", plan.data_dir, plan.uid, plan.gid, plan.tmpfs_mb, plan.expose)
    spec = dict(spec, mode=plan.mode, notes=notes, in_data_dir=data_dir)

    child = os.fork()
    if child == 0:
        if plan.mode in ("full", "userns"):
            _init_main(spec, plan)
        else:
            _worker_main(spec, plan)
        os._exit(0)
    # Only the worker keeps the task and result pipes: its death is then an immediate EOF for the parent.
    os.close(results)
    os.close(spec["fd_tasks"])
    _launcher_loop(child, lifeline)


def _launcher_loop(child: int, lifeline: int) -> None:
    """Wait for the child; if the lifeline reaches EOF (the parent died) kill it and leave."""
    while True:
        ready, _, _ = select.select([lifeline], [], [], 0.5)
        if ready:
            try:
                data = os.read(lifeline, 1)
            except OSError:
                data = b""
            if not data:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                os._exit(0)
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            os._exit(_exit_code(status))


def _init_main(spec: dict, plan: isolation.IsolationPlan) -> None:
    """pid 1 of the sandbox: a fresh /proc, then fork the worker and reap until it exits."""
    isolation.set_parent_death_signal()
    if os.getppid() == 1:  # the launcher is already gone
        os._exit(1)
    try:
        isolation.mount_fresh_proc()
    except OSError as e:
        spec["notes"].append(f"fresh /proc failed: {e}")
    worker = os.fork()
    if worker == 0:
        _worker_main(spec, plan)
        os._exit(0)
    for fd in (spec["fd_results"], spec["fd_tasks"], spec["fd_lifeline"]):
        os.close(fd)
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == worker:
            code = _exit_code(status)
            break
    try:
        os.kill(-1, signal.SIGKILL)  # everything else in the namespace (fork bombs, daemons)
    except OSError:
        pass
    os._exit(code)


# ---------------------------------------------------------------------------
# The worker proper
# ---------------------------------------------------------------------------


def _worker_main(spec: dict, plan: isolation.IsolationPlan) -> None:
    isolation.set_parent_death_signal()
    results, tasks = spec["fd_results"], spec["fd_tasks"]
    os.close(spec["fd_lifeline"])
    try:
        work_dir = isolation.IN_SANDBOX_WORK_DIR if plan.mode in ("full", "userns") else spec["work_dir"]
        os.chdir(work_dir)
        t0 = time.perf_counter()
        runtime = _Runtime(spec)
        import_s = time.perf_counter() - t0
        isolation.apply_limits(
            isolation.Limits(
                address_space=spec["address_space"],
                cpu_soft=spec["cpu_time_s"],
                cpu_hard=spec["cpu_hard_s"],
                processes=len(os.listdir("/proc/self/task")) + spec["extra_processes"] if plan.mode == "full" else None,
                file_size=spec["file_size"],
            )
        )
        isolation.drop_privileges(plan)
    except BaseException as e:  # noqa: BLE001 - report any start-up failure to the parent
        write_frame(results, {"type": "fatal", "message": f"worker start-up failed: {type(e).__name__}: {e}",
                              "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
        os._exit(3)
    write_frame(results, {"type": "ready", "mode": plan.mode, "notes": spec["notes"], "import_s": import_s})
    while True:
        task = read_frame(tasks)
        if task is None or task.get("type") == "exit":
            os._exit(0)
        if task["type"] == "probe":
            report = isolation.describe_isolation(task["host_ns"], tuple(task["paths"]), plan.mode)
            report["threads_unprivileged"] = _threads_unprivileged()
            report["no_signal_parent"] = _signal_probe(int(task["parent_pid"]))
            write_frame(results, {"type": "probe", "report": report, "notes": spec["notes"]})
            continue
        if task.get("bypass") and not spec.get("allow_bypass"):  # test-only switch, off unless the parent set it
            write_frame(results, {"type": "result", "status": "error", "error_kind": "policy", "nonce": task.get("nonce"),
                                  "error_message": "bypassing the policy is disabled"})  # fmt: skip
            continue
        isolation.rearm_cpu_limit(spec["cpu_time_s"])
        record = runtime.run(
            task,
            lambda stage: os.getpid() == runtime.pid
            and write_frame(results, {"type": "stage", "stage": stage, "nonce": task.get("nonce")}),
        )
        if os.getpid() != runtime.pid:  # a fork the candidate made: it must not answer or serve
            os._exit(0)
        if plan.mode in ("full", "userns"):
            _kill_leftovers()
        # A Python thread the candidate started keeps running after its task: this worker is done.
        record["recycle"] = len(sys._current_frames()) > runtime.threads
        write_frame(results, dict(record, type="result", nonce=task.get("nonce")))  # binds it to its task
        if record.get("error_kind") == "memory":
            os._exit(0)  # the heap may be in a bad state: let the parent start a fresh worker


def _threads_unprivileged() -> dict:
    """Every thread of the worker runs as a non-root uid (glibc broadcasts setuid to all threads), filtered."""
    uids, modes = set(), set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uids.update(int(v) for v in line.split()[1:])
                    elif line.startswith("Seccomp:"):
                        modes.add(line.split()[1])
        except OSError:
            pass
    return {"active": bool(uids) and 0 not in uids,
            "detail": f"thread uids {sorted(uids)}, thread seccomp modes {sorted(modes)}"}  # fmt: skip


def _kill_leftovers() -> None:
    """SIGKILL every other process of the sandbox uid in this pid namespace (a candidate's forks, daemons).

    kill(-1) skips the caller and pid 1, and reaches only processes this uid may signal: those in
    this namespace.
    """
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def _signal_probe(pid: int) -> dict:
    """Signal 0 to the parent's host pid: refused (or no such pid in this namespace) means isolated."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        return {"active": True, "detail": f"kill({pid}, 0): {e.strerror}"}
    return {"active": False, "detail": f"kill({pid}, 0) succeeded"}


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ..."


_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "bad_alloc", "Cannot allocate memory")


class _ModuleGuard:
    """Snapshots the namespaces of the modules candidates can reach; ``restore`` undoes assignments to them.

    The policy allows ``jnp.tanh = ...`` (plain attribute assignment on a module); without this a
    candidate could change what the trainer computes for later candidates in the same worker.
    Attributes of classes are out of reach of the policy's dunder ban only partly; recycling after
    ``max_tasks_per_worker`` bounds what survives.
    """

    def __init__(self, names: list[str]) -> None:
        self.saved = {n: (sys.modules[n], dict(vars(sys.modules[n]))) for n in sorted(set(names)) if n in sys.modules}

    def restore(self) -> int:
        """Put back every module attribute that was replaced or deleted; return how many.

        Added attributes stay: lazy imports add submodules to their parents legitimately.
        """
        changed = 0
        for module, saved in self.saved.values():
            current = vars(module)
            for key, value in saved.items():
                if current.get(key, _MISSING) is not value:
                    current[key] = value
                    changed += 1
        return changed


_MISSING = object()


class _Runtime:
    """Everything a worker loads once: JAX, the contract, the trainer, datasets (cached)."""

    def __init__(self, spec: dict) -> None:
        # Imported here, as root and before the drop: the interpreter may live where nobody cannot read.
        import dataclasses  # noqa: F401 - allow-listed for candidates: load it now
        import functools  # noqa: F401
        import math  # noqa: F401
        import typing  # noqa: F401

        import flax.linen as nn  # noqa: F401
        import jax
        import jax.numpy as jnp
        import numpy as np
        import optax  # noqa: F401

        jax.config.update("jax_enable_compilation_cache", False)  # see sandbox.py: who may write the cache
        from cenas_jax.candidates import contract, degenerate, policy
        from cenas_jax.candidates.errors import CandidateError

        self.jax, self.np = jax, np
        self.contract, self.policy, self.CandidateError = contract, policy, CandidateError
        self.degenerate = degenerate
        self.spec = spec
        self.pid = os.getpid()
        self.threads = len(sys._current_frames())  # Python threads before any candidate ran
        self.datasets: dict[str, Any] = {}
        try:
            from cenas_jax.config import TrainConfig, from_dict
            from cenas_jax.train import TrainError, train_candidate

            self.train_cfg = from_dict(TrainConfig, spec["train_cfg"])
            self.train_candidate, self.TrainError = train_candidate, TrainError
        except ImportError as e:  # the trainer is optional for cheap-stage-only workers
            self.train_candidate, self.TrainError, self.train_cfg = None, None, None
            spec["notes"].append(f"trainer unavailable: {e}")
        # Warm-up: load every lazily imported piece of JAX/Flax the stages use, while files are readable.
        jax.devices()
        jax.jit(lambda x: jnp.tanh(x) * 2)(jnp.ones((2, 2))).block_until_ready()
        built = contract.build_net(WARMUP_SOURCE, 10)
        contract.shape_check(built, (8, 8, 1), 10)
        contract.structure_hash(built, (8, 8, 1))
        degenerate.degeneracy_flags(built, (8, 8, 1))
        policy.check_policy(WARMUP_SOURCE)
        self.guard = _ModuleGuard([*policy.ALLOWED_MODULES, "flax", "builtins", "cenas_jax.train", "optax"])

    def _dataset(self, info: dict) -> Any:
        key = info["key"]
        if key not in self.datasets:
            from cenas_jax.data import Dataset

            np = self.np
            root = os.path.join(self.spec["in_data_dir"], key)
            arrays = {n: np.load(os.path.join(root, f"{n}.npy")) for n in ("x_train", "y_train", "x_val", "y_val",
                                                                        "mean", "std")}  # fmt: skip
            if os.path.exists(os.path.join(root, "x_test.npy")):  # written only for eval_split="test"
                arrays.update({n: np.load(os.path.join(root, f"{n}.npy")) for n in ("x_test", "y_test")})
            else:
                arrays.update(x_test=np.zeros((0, *arrays["x_train"].shape[1:]), np.uint8),
                              y_test=np.zeros((0,), np.int32))  # fmt: skip
            self.datasets[key] = Dataset(name=info["name"], num_classes=int(info["num_classes"]), **arrays)
        return self.datasets[key]

    def run(self, task: dict, report_stage) -> dict:
        """All stages for one candidate; every failure becomes a record (dict)."""
        rec: dict[str, Any] = {"status": "ok", "error_kind": None, "error_message": None, "stage": None}
        stage = "syntax"

        def enter(name: str) -> None:
            nonlocal stage
            stage = name
            rec["stage"] = name
            report_stage(name)

        contract = self.contract
        source = task["source"]
        num_classes = int(task["num_classes"])
        input_shape = tuple(task["input_shape"])
        try:
            if task.get("bypass") == "exec":
                enter("build")
                exec(compile(source, "<probe>", "exec"), {"__name__": "probe"})  # noqa: S102 - test-only path
                return rec
            enter("syntax")
            contract.parse_source(source)
            enter("policy")
            if task.get("bypass") != "policy":
                violations = self.policy.check_policy(source, max_bytes=int(task["max_source_bytes"]))
                if violations:
                    raise self.CandidateError("policy", self.policy.format_violations(violations))
            enter("build")
            built = contract.build_net(source, num_classes)
            self.guard.restore()  # module-level code may have patched jnp/nn functions the trainer uses
            enter("shape")
            params, _ = contract.shape_check(built, input_shape, num_classes)
            rec["params"] = params
            enter("budget")
            if params > int(task["max_params"]):
                raise self.CandidateError(
                    "budget", f"{params:,} parameters exceed the budget of {int(task['max_params']):,}"
                )
            rec["structure_hash"] = contract.structure_hash(built, input_shape)
            rec["degenerate"] = self._degeneracy(built, input_shape)
            if not task["train"]:
                return rec
            enter("train")
            if self.train_candidate is None:
                raise RuntimeError("the proxy trainer (cenas_jax.train) is not installed")
            dataset = self._dataset(task["data"])
            key = self.jax.random.fold_in(self.jax.random.PRNGKey(int(task["seed"])),
                                          zlib.crc32(source.encode()) & 0x7FFFFFFF)  # fmt: skip
            res = self.train_candidate(built.module, built.takes_train, dataset, self.train_cfg, key,
                                       eval_split=self.spec.get("eval_split", "val"))  # fmt: skip
            rec.update(
                accuracy=float(res.accuracy), seed_accuracies=[float(a) for a in res.seed_accuracies],
                loss=float(res.loss), params=int(res.params), flops=None if res.flops is None else float(res.flops),
                compile_s=float(res.compile_s), train_s=float(res.train_s),
            )  # fmt: skip
            return rec
        except BaseException as e:  # noqa: BLE001 - candidate code may raise anything, SystemExit included
            kind, message = self._classify(e, stage)
            rec.update(status="error", error_kind=kind, error_message=_short(message))
            return rec
        finally:
            self.guard.restore()  # the next candidate in this worker sees unpatched modules

    def _degeneracy(self, built: Any, input_shape: tuple) -> list[str] | None:
        """Degeneracy flags from the jaxpr; None when the analysis itself fails (the candidate is not at fault)."""
        try:
            return self.degenerate.degeneracy_flags(built, input_shape)
        except Exception:  # noqa: BLE001 - a diagnostic only: never turns a valid candidate into an error
            return None
        finally:
            self.guard.restore()

    def _classify(self, e: BaseException, stage: str) -> tuple[str, str]:
        text = f"{type(e).__name__}: {e}"
        if isinstance(e, self.CandidateError):
            return e.kind.value, e.message
        if self.TrainError is not None and isinstance(e, self.TrainError):
            if any(m in e.message for m in _MEMORY_MARKERS):
                return "memory", e.message
            return {"nan": "nan", "shape": "shape"}.get(e.kind, "compile"), e.message
        if isinstance(e, MemoryError) or any(m in text for m in _MEMORY_MARKERS):
            return "memory", text
        by_stage = {"syntax": "syntax", "policy": "policy", "build": "build", "shape": "shape", "budget": "shape"}
        return by_stage.get(stage, "crash"), f"unexpected error in stage {stage}: {text}"
