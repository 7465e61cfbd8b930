"""The sandbox worker process: sets up its isolation, then evaluates candidates sent by the parent.

Process tree of one worker (full isolation; see ``isolation.py``):

    launcher  (host pid, root)  -- watches the lifeline pipe; EOF (parent died) -> kill everything
      init    (pid 1 in a new pid namespace) -- mounts /proc, reaps, dies with the launcher
        worker (pid 2)  -- the trainer: imports jax/flax/optax, sets rlimits, drops to its uid, serves tasks;
                           runs no candidate code (it trains the programs tracers export)
          zygote        -- forked before XLA starts threads; no data in view, a uid of its own (tracer.py)
            tracer      -- one per candidate: runs its code, exports its programs with jax.export, exits

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

import dataclasses
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
        accelerator=bool(spec.get("accelerator")),
    )
    notes: list[str] = []
    data_dir = plan.data_dir
    if plan.accelerator:
        notes.append("accelerator worker: no pid namespace, /dev /proc /sys left writable (CUDA's cuInit fails "
                     "otherwise); the uid drop still guards them")
    if plan.mode in ("full", "userns"):
        try:
            data_dir = isolation.enter_namespaces(plan)
        except OSError as e:
            if spec["requested"] == "full":
                write_frame(results, {"type": "fatal", "message": f"full isolation failed: {e}"})
                os._exit(3)
            notes.append(f"namespaces unavailable ({e}); running with rlimits + policy only")
            plan = isolation.IsolationPlan("rlimits", plan.data_dir, plan.uid, plan.gid, plan.tmpfs_mb, plan.expose,
                                           plan.accelerator)
    spec = dict(spec, mode=plan.mode, notes=notes, in_data_dir=data_dir)

    child = os.fork()
    if child == 0:
        if plan.mode in ("full", "userns") and not plan.accelerator:
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


def _tune_host(spec: dict) -> None:
    """Keep freed buffers in the heap and bind to the cores the parent gave this worker (CPU pools).

    DESIGN.md §3 "Pool scaling on CPU": both make a pool of single-threaded workers scale with the cores.
    What was applied is kept for the probe (`cenas sandbox check` prints it), not printed at every start.
    """
    from cenas_jax import hostmem
    from cenas_jax.candidates.placement import CPU_CORES_ENV

    threshold = hostmem.keep_freed_memory()
    done = [f"malloc keeps blocks below {threshold >> 20} MiB in the heap" if threshold else "malloc not tuned (not glibc)"]
    text = os.environ.get(CPU_CORES_ENV, "")
    if text:
        pinned = hostmem.pin_to_cores(hostmem.parse_cores(text))
        done.append(f"pinned to core(s) {text}" if pinned else f"could not pin to core(s) {text}")
    spec["host_tuning"] = "; ".join(done)


def _worker_main(spec: dict, plan: isolation.IsolationPlan) -> None:
    isolation.set_parent_death_signal()
    results, tasks = spec["fd_results"], spec["fd_tasks"]
    os.close(spec["fd_lifeline"])
    try:
        _tune_host(spec)  # before JAX starts a thread or allocates a buffer
        work_dir = isolation.IN_SANDBOX_WORK_DIR if plan.mode in ("full", "userns") else spec["work_dir"]
        os.chdir(work_dir)
        t0 = time.perf_counter()
        from cenas_jax.candidates import tracer

        tracer.preload()  # imports only: XLA has no threads yet, so forking is safe
        zygote = tracer.fork_zygote(spec, plan, work_dir)
        runtime = _Runtime(spec, zygote)
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
        isolation.set_dumpable(False)  # a tracer of the same uid (userns, rlimits) can neither read nor trace it
    except BaseException as e:  # noqa: BLE001 - report any start-up failure to the parent
        where = ", ".join(f"{k}={os.environ[k]}" for k in ("JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS")
                          if k in os.environ)  # the device pinning, for a worker that cannot reach its device
        write_frame(results, {"type": "fatal", "message": f"worker start-up failed ({where}): {type(e).__name__}: {e}",
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
            report.update(runtime.probe_tracer(plan))
            report["host_tuning"] = spec.get("host_tuning", "")
            report["jax_backend"] = runtime.platform  # plain strings: not layers (the parent filters dicts)
            report["jax_devices"] = [str(d) for d in runtime.jax.devices()][:16]
            write_frame(results, {"type": "probe", "report": report, "notes": spec["notes"]})
            continue
        if task.get("bypass") and not spec.get("allow_bypass"):  # test-only switch, off unless the parent set it
            write_frame(results, {"type": "result", "status": "error", "error_kind": "policy", "nonce": task.get("nonce"),
                                  "error_message": "bypassing the policy is disabled"})  # fmt: skip
            continue
        isolation.rearm_cpu_limit(spec["cpu_time_s"])
        record = runtime.run(task, lambda stage, task=task: write_frame(results, {"type": "stage", "stage": stage,
                                                                                   "nonce": task.get("nonce")}))  # fmt: skip
        record["recycle"] = runtime.broken  # a zygote that died cannot serve the next candidate
        write_frame(results, dict(record, type="result", nonce=task.get("nonce")))  # binds it to its task
        if record.get("error_kind") == "memory" or runtime.broken:
            os._exit(0)  # let the parent start a fresh worker


def export_platform(jax: Any) -> str:
    """The platform name ``jax.export`` lowers for: the backend's, with "gpu" made "cuda" or "rocm"."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "cuda"


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
_TRACER_STAGES = ("syntax", "policy", "build", "shape", "budget", "train")
_MAX_TRACER_FRAMES = 64
# What a tracer's result may set; the numbers a score is made of come from the trainer alone.
_TRACER_FIELDS = ("status", "error_kind", "error_message", "stage", "params", "structure_hash", "degenerate")


class TracerOutput:
    """What one tracer sent, parsed as untrusted input: its record, its programs, or why it was refused."""

    def __init__(self) -> None:
        self.record: dict | None = None
        self.blobs: dict[str, bytes] = {}
        self.violation: str | None = None
        self.train_started: float | None = None
        self.stage: str | None = None  # the last stage it reported


def collect_tracer(conn: Any, nonce: Any, report_stage, max_export_bytes: int) -> TracerOutput:
    """Read a tracer's socket to EOF with every bound checked (frame size, frame count, blob sizes,
    nonce, known stages); forward its stages as they come."""
    out = TracerOutput()
    buf = bytearray()
    frames = 0
    sizes: dict[str, int] | None = None
    total = 0
    while True:
        try:
            chunk = conn.recv(1 << 20)
        except OSError:
            chunk = b""
        if chunk:
            buf += chunk
            total += len(chunk)
            if total > max_export_bytes + 2 * MAX_FRAME_BYTES:
                out.violation = "the tracer sent more bytes than any export needs"
                return out
        while sizes is None and len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if n > MAX_FRAME_BYTES:
                out.violation = f"a {n}-byte frame (limit {MAX_FRAME_BYTES})"
                return out
            if len(buf) < 4 + n:
                break
            body = bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            frames += 1
            if frames > _MAX_TRACER_FRAMES:
                out.violation = "a flood of frames"
                return out
            try:
                msg = json.loads(body)
            except Exception as e:  # noqa: BLE001 - RecursionError from deep nesting too
                out.violation = f"an undecodable frame ({type(e).__name__})"
                return out
            if not isinstance(msg, dict) or msg.get("nonce") != nonce:
                out.violation = "a frame without its task's nonce"
                return out
            if msg.get("type") == "stage":
                stage = msg.get("stage")
                if stage not in _TRACER_STAGES:
                    out.violation = "an unknown stage"
                    return out
                if stage == "train":
                    out.train_started = time.perf_counter()
                out.stage = stage
                report_stage(stage)
            elif msg.get("type") == "result":
                bs = msg.get("blob_sizes")
                if not isinstance(bs, dict) or any(not isinstance(k, str) or type(v) is not int or v < 0
                                                   for k, v in bs.items()) or len(bs) > 8:  # fmt: skip
                    out.violation = "a result with malformed program sizes"
                    return out
                if sum(bs.values()) > max_export_bytes:
                    out.violation = f"programs over {max_export_bytes >> 20} MiB"
                    return out
                sizes = bs
                out.record = {k: msg.get(k) for k in _TRACER_FIELDS}
                out.record["export"] = msg.get("export")
                out.record["probe"] = msg.get("probe")
            else:
                out.violation = "an unexpected message type"
                return out
        if sizes is not None and len(buf) > sum(sizes.values()):
            out.violation = "bytes after the programs"
            return out
        if not chunk:
            break
    if sizes is not None:
        if len(buf) != sum(sizes.values()):
            out.violation = "truncated programs"
            return out
        pos = 0
        for name in sorted(sizes):
            out.blobs[name] = bytes(buf[pos : pos + sizes[name]])
            pos += sizes[name]
    elif buf:
        out.violation = "a truncated frame"
    return out


def _exit_text(code: int | None) -> tuple[str, str]:
    if code is None:
        return "crash", "the tracer's zygote stopped answering"
    if code == 128 + signal.SIGXCPU:
        return "timeout", "the tracer ran past its CPU-time limit"
    if code == 128 + signal.SIGKILL:
        return "crash", "the tracer was killed (SIGKILL; a memory or process limit, or a signal)"
    if code > 128:
        return "crash", f"the tracer died of signal {code - 128}"
    return "crash", f"the tracer exited with code {code} before sending its result"


class _Runtime:
    """The trainer: trusted code only. It loads datasets, hands each candidate to a new tracer, and trains
    and scores the programs the tracer exports (``train/exported.py``)."""

    def __init__(self, spec: dict, zygote: Any) -> None:
        # Imported here, as root and before the drop: the interpreter may live where nobody cannot read.
        import jax
        import jax.numpy as jnp
        import numpy as np

        jax.config.update("jax_enable_compilation_cache", False)  # see evaluator.py: who may write the cache
        from cenas_jax.config import TrainConfig, from_dict, to_dict
        from cenas_jax.train import TrainError, exported

        self.jax, self.np = jax, np
        self.exported, self.TrainError = exported, TrainError
        self.spec = spec
        self.zygote = zygote
        self.broken = False
        self.datasets: dict[str, Any] = {}
        self.train_cfg = from_dict(TrainConfig, spec["train_cfg"])
        self.to_dict = to_dict
        self.platform = export_platform(jax)
        # Warm-up: every lazily imported piece the trainer uses, while files are readable.
        jax.jit(lambda x: jnp.tanh(x) * 2)(jnp.ones((2, 2))).block_until_ready()
        self._warm_up()

    def _warm_up(self) -> None:
        """One tracer round trip on the warm-up net, its programs deserialised and compiled (not trained)."""
        shapes = self.exported.Shapes((8, 8, 1), 4, 4, 10, 1)
        task = {"type": "task", "nonce": "warm-up", "source": WARMUP_SOURCE, "train": True, "num_classes": 10,
                "input_shape": [8, 8, 1], "max_params": 1 << 30, "max_source_bytes": 1 << 20}  # fmt: skip
        out, code = self._trace(task, shapes, lambda stage: None)
        if out.violation or out.record is None or out.record.get("status") != "ok":
            why = out.violation or (out.record or {}).get("error_message") or _exit_text(code)[1]
            raise RuntimeError(f"the tracer failed on the warm-up net: {why}")
        progs = self.exported.load_programs(out.record.get("export"), out.blobs, shapes, self.platform)
        self.jax.jit(lambda k: progs.init.call(k)).lower(self.jax.ShapeDtypeStruct((2,), self.np.uint32)).compile()

    def _trace(self, task: dict, shapes: Any, report_stage, train_cfg: dict | None = None
               ) -> tuple[TracerOutput, int | None]:  # fmt: skip
        tracer_task = dict(task, train_cfg=train_cfg or self.spec["train_cfg"], platform=self.platform,
                           shapes=shapes.to_dict() if shapes is not None else None)  # fmt: skip
        try:
            conn = self.zygote.start_tracer(tracer_task)
        except OSError:
            self.broken = True
            out = TracerOutput()
            return out, None
        try:
            out = collect_tracer(conn, task.get("nonce"), report_stage, self.exported.MAX_EXPORT_BYTES)
        finally:
            conn.close()
        code = self.zygote.exit_status()
        if code is None:
            self.broken = True
        return out, code

    def probe_tracer(self, plan: Any) -> dict:
        """Isolation layers of the tracer, probed from a tracer (``cenas sandbox check``): a uid of its own,
        no view of the datasets."""
        data_dir = self.spec["in_data_dir"]
        out, _ = self._trace({"type": "probe", "nonce": "probe", "data_dir": data_dir}, None, lambda stage: None)
        probe = (out.record or {}).get("probe") if out.violation is None else None
        if not isinstance(probe, dict):
            why = out.violation or "no answer"
            off = {"active": False, "detail": f"the probe tracer failed: {why}"}
            return {"tracer_own_uid": off, "tracer_no_data": dict(off)}
        uid = probe.get("uid")
        own = isinstance(uid, int) and uid != os.getuid()
        mine = os.stat(data_dir).st_dev
        hidden = probe.get("data_dev") != mine and not probe.get("data_entries")
        return {
            "tracer_own_uid": {"active": own, "detail": f"tracers run as uid {uid}, the trainer as {os.getuid()}"},
            "tracer_no_data": {"active": hidden, "detail": (
                "the dataset directory is an empty tmpfs in the tracer's mount namespace" if hidden else
                f"a tracer sees the dataset directory ({probe.get('data_entries')} entries)")},
        }  # fmt: skip

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

    def _task_cfg(self, task: dict) -> tuple[Any, dict | None, int]:
        """The recipe of this task (``train.seeds``, or the task's own ``seeds``; its dict when it is not the
        spec's) and its first seed's number (``seed_offset``)."""
        seeds, offset = task.get("seeds"), task.get("seed_offset") or 0
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"seed_offset {offset!r} is not an int >= 0")
        if seeds is None or seeds == self.train_cfg.seeds:
            return self.train_cfg, None, offset
        if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
            raise ValueError(f"seeds {seeds!r} is not an int >= 1")
        cfg = dataclasses.replace(self.train_cfg, seeds=seeds)
        return cfg, self.to_dict(cfg), offset

    def run(self, task: dict, report_stage) -> dict:
        """One candidate: traced in a new tracer, then (``task["train"]``) trained here; always a record."""
        t0 = time.perf_counter()
        eval_split = self.spec.get("eval_split", "val")
        shapes = None
        dataset = None
        try:
            train_cfg, train_dict, seed_offset = self._task_cfg(task)
        except ValueError as e:  # the parent's task, not the candidate: never happens with our parent
            return {"status": "error", "error_kind": "crash", "stage": None, "error_message": _short(f"bad task: {e}")}
        try:
            if task["train"]:
                dataset = self._dataset(task["data"])
                shapes = self.exported.Shapes.for_dataset(dataset, train_cfg, eval_split)
        except Exception as e:  # noqa: BLE001 - our own data; never the candidate's fault
            return {"status": "error", "error_kind": "crash", "stage": None,
                    "error_message": _short(f"loading the dataset failed: {type(e).__name__}: {e}")}  # fmt: skip
        out, code = self._trace(task, shapes, report_stage, train_dict)
        if out.violation is not None:
            return {"status": "error", "error_kind": "crash", "stage": out.stage,
                    "error_message": f"tracer protocol violation: {out.violation}"}  # fmt: skip
        rec = out.record
        if rec is None:
            kind, message = _exit_text(code)
            return {"status": "error", "error_kind": kind, "stage": out.stage, "error_message": message}
        meta = rec.pop("export", None)
        if rec.get("status") != "ok" or not task["train"]:
            return rec
        rec["stage"] = "train"
        t_export = (out.train_started or t0)
        try:
            progs = self.exported.load_programs(meta, out.blobs, shapes, self.platform)
            export_s = time.perf_counter() - t_export
            key = self.jax.random.fold_in(self.jax.random.PRNGKey(int(task["seed"])),
                                          zlib.crc32(task["source"].encode()) & 0x7FFFFFFF)  # fmt: skip
            res = self.exported.train_exported(progs, dataset, train_cfg, key, eval_split=eval_split,
                                               max_params=int(task["max_params"]), seed_offset=seed_offset)  # fmt: skip
        except BaseException as e:  # noqa: BLE001 - hostile programs may make XLA raise anything
            kind, message = self._classify(e)
            rec.update(status="error", error_kind=kind, error_message=_short(message))
            return rec
        rec.update(
            accuracy=float(res.accuracy), seed_accuracies=[float(a) for a in res.seed_accuracies],
            loss=float(res.loss), params=int(res.params), flops=None if res.flops is None else float(res.flops),
            compile_s=float(res.compile_s + export_s), train_s=float(res.train_s),
        )  # fmt: skip
        return rec

    def _classify(self, e: BaseException) -> tuple[str, str]:
        text = f"{type(e).__name__}: {e}"
        if isinstance(e, self.TrainError):
            if any(m in e.message for m in _MEMORY_MARKERS):
                return "memory", e.message
            return {"nan": "nan", "shape": "shape", "export": "export", "budget": "budget"}.get(e.kind, "compile"), e.message
        if isinstance(e, MemoryError) or any(m in text for m in _MEMORY_MARKERS):
            return "memory", text
        return "crash", f"unexpected error while training: {text}"
