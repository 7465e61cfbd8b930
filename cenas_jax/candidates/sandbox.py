"""The parent side of the sandbox: a pool of worker processes that turn candidate sources into records.

``Evaluator(data_cfg, train_cfg, sandbox_cfg).evaluate(candidates)`` returns
one ``EvalRecord`` per candidate, in input order; ``evaluate_iter`` yields
them as they complete. The calling process never imports or executes
candidate code: it only sends source text to workers (``worker.py``) and
reads JSON back (never pickle: the worker is untrusted).

Stages, each with its own error kind (DESIGN.md §3): syntax, policy, build,
shape, budget (``jax.eval_shape`` parameter count vs ``sandbox.max_params``),
then, when training, compile / nan / memory from the trainer. The parent adds
timeout (wall clock: ``sandbox.check_timeout_s`` for the cheap stages,
``sandbox.timeout_s`` for the whole candidate; the worker's process group is
killed and a fresh worker replaces it), crash (the worker died: segfault,
``os._exit``, SIGKILL) and memory (a worker that died saying so). Workers are
recycled after a crash, a timeout, a memory error, a task that left a Python
thread running, and after ``sandbox.max_tasks_per_worker`` tasks.

The compilation cache. A candidate runs Python in the worker before the
trainer compiles, so after the first candidate nothing in a worker is trusted,
and a persistent cache keyed by the program's hash is only as safe as its
least trusted writer: a candidate that can write an entry can plant a
compiled program another candidate will load. No trusted process compiles
candidates, so **the persistent compilation cache is off inside workers**
(``train.compile_cache`` is forced to false there, and the worker turns
``jax_enable_compilation_cache`` off). Each worker keeps JAX's in-memory
cache for its lifetime, which serves every seed of a candidate. Within one
worker's lifetime a candidate that escaped the policy and the restricted
builtins could tamper with that worker's state (and forge its own record);
``max_tasks_per_worker`` bounds how many later candidates share a worker;
the worker also puts back any attribute a candidate reassigned on the
allow-listed modules (``jnp.mean = ...``) after the build stage and after
every task.

Data. The parent loads each dataset once and writes its train and validation
arrays as ``.npy`` files into its own temp dir, which appears read-only at
``/tmp/.cenas-data`` inside the sandbox; the test split reaches workers only
of an Evaluator built with ``eval_split="test"`` (final retraining, never the
search), and a worker never opens a user path after dropping privileges.
Isolation layers and what held on these machines: see ``isolation.py`` and
``cenas sandbox check``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from cenas_jax.candidates import isolation, placement
from cenas_jax.candidates.errors import ALL_KINDS
from cenas_jax.candidates.worker import MAX_MESSAGE_CHARS, FrameBuffer, encode_frame
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig, to_dict

STAGES = ("syntax", "policy", "build", "shape", "budget", "train")
CHEAP_STAGES = STAGES[:-1]
_READ_BYTES_PER_CALL = 4 << 20  # per worker per pass of the read loop
_MAX_FRAMES_PER_TASK = 256  # a task sends about ten (stages, one result); more is a flood
_EXTRA_PROCESSES = 64  # threads/processes a worker may add beyond those it has when it drops to nobody
_START_FAILURES_BEFORE_GIVING_UP = 3
_STDERR_TAIL = 1500


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (workers fail to start): an environment problem, not a candidate's."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One architecture to evaluate: an id chosen by the caller, its source, optionally another dataset."""

    id: str
    source: str
    dataset: str | None = None  # None: the Evaluator's data_cfg.name


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """The outcome of one candidate; a failure is a record, never an exception.

    ``accuracy`` is the mean validation accuracy over seeds in [0, 1];
    ``loss`` the final mean training loss (nats); ``params`` the parameter
    count; ``flops`` per example (XLA cost analysis); ``compile_s``,
    ``train_s`` as measured by the trainer and ``wall_s`` from dispatch to
    record (seconds); ``stage`` the last stage reached.
    """

    candidate_id: str
    status: str  # "ok" | "error"
    error_kind: str | None = None  # an ErrorKind value
    error_message: str | None = None
    stage: str | None = None
    accuracy: float | None = None
    seed_accuracies: tuple[float, ...] = ()
    loss: float | None = None
    params: int | None = None
    flops: float | None = None
    compile_s: float | None = None
    train_s: float | None = None
    wall_s: float | None = None
    structure_hash: str | None = None
    dataset: str | None = None
    # Degeneracy flags from the jaxpr ("linear: ...", "constant: ...", "dead_params: ..."); None: not analysed.
    degenerate: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seed_accuracies"] = list(self.seed_accuracies)
        d["degenerate"] = None if self.degenerate is None else list(self.degenerate)
        return d


# ---------------------------------------------------------------------------
# Untrusted values from a worker -> a record
# ---------------------------------------------------------------------------


def _num(v: Any, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    if math.isnan(v):
        return v
    return min(max(v, lo), hi)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s if len(s) <= MAX_MESSAGE_CHARS else s[:MAX_MESSAGE_CHARS] + " ..."


def _implausible(msg: dict) -> str | None:
    """Why the numbers of an "ok" result cannot be true (non-finite, out of range), or None."""
    for field, lo, hi in (("accuracy", 0.0, 1.0), ("loss", -math.inf, math.inf)):
        v = msg.get(field)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
                                  and math.isfinite(v)):  # fmt: skip
            return f"{field} {_text(repr(v))[:40]} is not a finite number in [{lo}, {hi}]"
    seeds = msg.get("seed_accuracies")
    if isinstance(seeds, list) and any(not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0) for a in seeds):
        return "a seed accuracy outside [0, 1]"
    return None


def _record_from_worker(cid: str, msg: dict, wall_s: float, dataset: str) -> EvalRecord:
    why = _implausible(msg) if msg.get("status") == "ok" else None
    if why is not None:  # numbers are checked before they reach the store
        return EvalRecord(cid, "error", "crash", f"protocol violation: {why}", None, wall_s=wall_s, dataset=dataset)
    status = msg.get("status") if msg.get("status") in ("ok", "error") else "error"
    kind = msg.get("error_kind")
    if status == "error" and kind not in ALL_KINDS:
        kind = "crash"
    if status == "ok":
        kind = None
    seeds = msg.get("seed_accuracies") or []
    if not isinstance(seeds, list):
        seeds = []
    seeds = tuple(a for a in (_num(x, 0.0, 1.0) for x in seeds[:1024]) if a is not None)
    stage = msg.get("stage") if msg.get("stage") in STAGES else None
    h = msg.get("structure_hash")
    return EvalRecord(
        candidate_id=cid,
        status=status,
        error_kind=kind,
        error_message=_text(msg.get("error_message")) if status == "error" else None,
        stage=stage,
        accuracy=_num(msg.get("accuracy"), 0.0, 1.0),
        seed_accuracies=seeds,
        loss=_num(msg.get("loss")),
        params=_int(msg.get("params")),
        flops=_num(msg.get("flops"), 0.0),
        compile_s=_num(msg.get("compile_s"), 0.0),
        train_s=_num(msg.get("train_s"), 0.0),
        wall_s=wall_s,
        structure_hash=h if isinstance(h, str) and len(h) <= 64 else None,
        dataset=dataset,
        degenerate=_flags(msg.get("degenerate")),
    )


def _flags(v: Any) -> tuple[str, ...] | None:
    """Degeneracy flags from a worker: a short list of short strings, or None."""
    if not isinstance(v, list):
        return None
    return tuple(_text(x)[:300] for x in v[:8] if isinstance(x, str))


# ---------------------------------------------------------------------------
# Platform and pool sizing (no JAX import in the parent)
# ---------------------------------------------------------------------------


def default_workers(cfg: SandboxConfig, platform: str | None = None) -> int:
    """Pool size on this host (``placement.pool_size``); ``platform`` overrides the detected one, with
    the detected devices."""
    inv = placement.detect_inventory()
    if platform is not None and platform != inv.platform:
        inv = placement.Inventory(platform, inv.devices if platform != "cpu" else (), inv.cores)
    return placement.pool_size(inv, cfg)


# ---------------------------------------------------------------------------
# One worker process, seen from the parent
# ---------------------------------------------------------------------------


# The worker's entry point; the protocol tests put a fake worker here.
_WORKER_BOOT = "import sys; sys.path.insert(0, {root!r}); from cenas_jax.candidates.worker import main; main()"


class _Worker:
    """A worker process and its pipes; ``state`` is starting | idle | busy | dead."""

    def __init__(self, slot: int, serial: int, spec: dict, env: dict, log_dir: str, work_root: str) -> None:
        self.slot = slot
        self.serial = serial
        self.log_path = os.path.join(log_dir, f"worker-{serial}.log")
        self.work_dir = tempfile.mkdtemp(prefix=f"w{serial}-", dir=work_root)
        os.chmod(self.work_dir, 0o700)
        tasks_r, self.tasks_w = os.pipe()
        self.results_r, results_w = os.pipe()
        life_r, self.life_w = os.pipe()
        spec = dict(spec, fd_tasks=tasks_r, fd_results=results_w, fd_lifeline=life_r, work_dir=self.work_dir)
        boot = _WORKER_BOOT.format(root=spec["package_root"])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", boot, json.dumps(spec)],
                env=env,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(tasks_r, results_w, life_r),
                start_new_session=True,  # its own process group: a timeout kills the whole tree
            )
        for fd in (tasks_r, results_w, life_r):
            os.close(fd)
        os.set_blocking(self.results_r, False)
        os.set_blocking(self.tasks_w, False)
        self.buffer = FrameBuffer()
        self.state = "starting"
        self.started = time.monotonic()
        self.mode: str | None = None
        self.notes: list[str] = []
        self.tasks_done = 0
        self.task: tuple[int, Candidate, str] | None = None  # (index, candidate, dataset name)
        self.stage: str | None = None
        self.dispatched = 0.0
        self.check_deadline: float | None = None
        self.deadline = 0.0
        self.killed_by_parent = False
        self.fatal: str | None = None
        self.eof = False
        self.nonce: str | None = None
        self.frames = 0  # messages since start-up or the last dispatch

    def send(self, obj: dict, timeout_s: float = 30.0) -> None:
        """Write one message; a worker that stops reading makes this raise TimeoutError, never hang."""
        view = memoryview(encode_frame(obj))
        deadline = time.monotonic() + timeout_s
        while view:
            try:
                n = os.write(self.tasks_w, view)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the worker stopped reading its tasks") from None
                select.select([], [self.tasks_w], [], min(left, 1.0))
                continue
            view = view[n:]

    def read(self) -> list[dict]:
        """The complete messages available now, reading at most ``_READ_BYTES_PER_CALL`` so that a worker
        flooding its pipe cannot keep the parent from its deadlines; sets ``eof`` when the worker closed its end.
        Raises ValueError on a malformed frame."""
        out: list[dict] = []
        budget = _READ_BYTES_PER_CALL
        while budget > 0:
            try:
                chunk = os.read(self.results_r, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            budget -= len(chunk)
            out.extend(self.buffer.feed(chunk))
        self.frames += len(out)
        if self.frames > _MAX_FRAMES_PER_TASK:
            raise ValueError(f"worker sent more than {_MAX_FRAMES_PER_TASK} messages for one task")
        return out

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (launcher, pid-1, worker, its children)."""
        if self.proc.poll() is None:
            self.killed_by_parent = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.reap()

    def reap(self) -> int | None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self.tasks_w, self.results_r, self.life_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.state = "dead"
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.proc.returncode

    def stderr_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _STDERR_TAIL))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""


_MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED", "bad_alloc", "Cannot allocate memory", "out of memory",
                   "Out of memory")  # fmt: skip


def _describe_exit(code: int | None) -> tuple[str, str]:
    """(kind, message) for a worker that died on its own; ``code`` is the launcher's exit code."""
    if code is None:
        return "crash", "the worker closed its pipe"
    sig = code - 128 if code > 128 else (-code if code < 0 else 0)
    if sig:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGXCPU:
            return "timeout", f"the worker exceeded its CPU-time limit ({name})"
        return "crash", f"the worker died from {name}"
    return "crash", f"the worker exited with code {code}"


_ROOT_PREFIX = "cenas-sandbox-"


def _remove_stale_roots() -> None:
    """Delete the temp dirs (dataset copies, logs) of evaluators whose process died without ``close()``."""
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        return
    for name in entries:
        m = re.fullmatch(rf"{_ROOT_PREFIX}(\d+)-\w+", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:
            pass  # alive (another user's): leave it


def _cleanup(workers: list[_Worker], root: str) -> None:
    for w in workers:
        if w.state != "dead":
            try:
                w.kill()
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                pass
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# The Evaluator
# ---------------------------------------------------------------------------


class Evaluator:
    """A pool of sandboxed workers that evaluates candidates; use as a context manager or call ``close()``.

    ``seed`` keys the training (each candidate trains from
    ``fold_in(PRNGKey(seed), crc32(source))``, seed ``s`` from a further
    ``fold_in(., s)``). The keyword-only ``_allow_bypass_for_tests`` exists
    for the hostile-code tests only: with it ``_evaluate_bypassing`` can send
    code past the static policy, or past the restricted builtins too, to show
    that the process boundary holds on its own. No config key reaches it.
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        train_cfg: TrainConfig,
        sandbox_cfg: SandboxConfig,
        *,
        seed: int = 0,
        eval_split: str = "val",
        inventory: placement.Inventory | None = None,
        _allow_bypass_for_tests: bool = False,
    ) -> None:
        if eval_split not in ("val", "test"):
            raise ValueError(f"eval_split must be 'val' (search) or 'test' (final retrain), got {eval_split!r}")
        self.eval_split = eval_split  # the split trained candidates are scored on
        self.data_cfg = data_cfg
        self.train_cfg = train_cfg
        self.cfg = sandbox_cfg
        self.seed = int(seed)
        self.inventory = placement.detect_inventory() if inventory is None else inventory
        self.platform = self.inventory.platform
        self.mode = isolation.detect_mode(sandbox_cfg.isolation)
        self.placements = placement.plan_workers(self.inventory, sandbox_cfg)
        self.pool_size = len(self.placements)
        if self.mode == "rlimits" and sandbox_cfg.isolation == "auto":
            print(
                f"cenas sandbox: WARNING: no namespaces on {sys.platform}; candidates are held by the static policy, "
                "restricted builtins and rlimits only (see `cenas sandbox check`)",
                file=sys.stderr,
            )
        _remove_stale_roots()
        self._root = tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-")
        os.chmod(self._root, 0o700)
        self._data_dir = os.path.join(self._root, "data")
        self._log_dir = os.path.join(self._root, "logs")
        self._work_root = os.path.join(self._root, "work")
        os.mkdir(self._data_dir, 0o755)
        os.chmod(self._data_dir, 0o755)  # the sandbox uid reads it (bind-mounted read-only)
        os.mkdir(self._log_dir, 0o700)
        os.mkdir(self._work_root, 0o755)
        os.chmod(self._work_root, 0o755 if os.geteuid() != 0 else 0o711)
        self._workers: list[_Worker] = []
        self._serial = 0
        self._start_failures = 0
        self.last_start_failure: str | None = None  # why the last worker that failed to start failed
        self._datasets: dict[str, Any] = {}  # name -> Dataset (parent copy, for metadata)
        self._written: dict[str, str] = {}  # name -> key of its directory under data/
        self._closed = False
        self._busy_generator = False
        train_dict = to_dict(dataclasses.replace(train_cfg, compile_cache=False))
        address_space = sandbox_cfg.memory_mb << 20 if self.platform == "cpu" else None
        self._spec = {
            "requested": sandbox_cfg.isolation,
            "mode": self.mode,
            "data_dir": self._data_dir,
            "tmpfs_mb": sandbox_cfg.tmpfs_mb,
            "expose": list(isolation.python_paths()),
            "package_root": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            "address_space": address_space,
            "cpu_time_s": int(sandbox_cfg.cpu_time_s),
            "cpu_hard_s": int(sandbox_cfg.cpu_time_s) * (sandbox_cfg.max_tasks_per_worker + 1) + 600,
            "extra_processes": _EXTRA_PROCESSES,
            "file_size": sandbox_cfg.file_size_mb << 20,
            "train_cfg": train_dict,
            "allow_bypass": bool(_allow_bypass_for_tests),
            "eval_split": eval_split,
            "accelerator": self.platform != "cpu",
        }
        self._env = self._worker_env()
        self._finalizer = weakref.finalize(self, _cleanup, self._workers, self._root)

    # -- set-up ---------------------------------------------------------------------------

    def _worker_env(self) -> dict[str, str]:
        """A scrubbed environment: nothing of the caller's but the platform choice."""
        threads = str(self.cfg.threads_per_worker)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "JAX_ENABLE_COMPILATION_CACHE": "false",
        }
        if self.platform == "cpu":
            # One intra-op thread per worker: the pool, not XLA, uses the cores (DESIGN.md §3).
            flags = "--xla_cpu_multi_thread_eigen=false" if self.cfg.threads_per_worker == 1 else ""
            env["XLA_FLAGS"] = f"{flags} intra_op_parallelism_threads={threads}".strip()
            env["JAX_PLATFORMS"] = "cpu"
        if self.mode == "rlimits":
            env["HOME"] = env["TMPDIR"] = self._work_root
        return env

    def _spawn(self, slot: int) -> _Worker:
        self._serial += 1
        env = dict(self._env)
        env.update(self.placements[slot].env)  # the device pinning (empty on CPU)
        w = _Worker(slot, self._serial, self._spec, env, self._log_dir, self._work_root)
        self._workers.append(w)
        return w

    def _dataset(self, name: str) -> Any:
        if name not in self._datasets:
            from cenas_jax.data import load_dataset

            self._datasets[name] = load_dataset(dataclasses.replace(self.data_cfg, name=name))
        return self._datasets[name]

    def _dataset_info(self, name: str, write: bool) -> dict:
        """Metadata for the worker; with ``write`` also the arrays as .npy files it reads (the test split only
        when this Evaluator scores on it, ``eval_split="test"``)."""
        import numpy as np

        ds = self._dataset(name)
        info = {"name": ds.name, "num_classes": int(ds.num_classes), "input_shape": list(ds.input_shape)}
        if write and name not in self._written:
            key = f"d{len(self._written)}"
            path = os.path.join(self._data_dir, key)
            tmp = path + ".partial"
            os.mkdir(tmp, 0o755)
            fields = ("x_train", "y_train", "x_val", "y_val", "mean", "std")
            if self.eval_split == "test":
                fields += ("x_test", "y_test")
            for field in fields:
                target = os.path.join(tmp, f"{field}.npy")
                np.save(target, np.ascontiguousarray(getattr(ds, field)))
                os.chmod(target, 0o644)
            os.chmod(tmp, 0o755)
            os.rename(tmp, path)
            self._written[name] = key
        info["key"] = self._written.get(name)
        return info

    # -- the pool -------------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers if w.state != "dead"]

    def _retire(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)

    def _ensure_pool(self, wanted: int) -> None:
        live = self._live()
        used = {w.slot for w in live}
        for slot in range(self.pool_size):
            if len(live) >= min(wanted, self.pool_size):
                break
            if slot not in used:
                live.append(self._spawn(slot))

    def _start_failed(self, w: _Worker, why: str) -> None:
        self._start_failures += 1
        tail = w.stderr_tail()
        self.last_start_failure = why
        self._retire(w)
        if self._start_failures >= _START_FAILURES_BEFORE_GIVING_UP:
            raise SandboxError(f"sandbox workers fail to start ({self._start_failures} times): {why}\n{tail}")

    def start(self, wait: bool = True) -> None:
        """Start the whole pool now (e.g. while the LLM generates); with ``wait``, return once every worker is ready.

        Raises ``SandboxError`` when workers cannot start.
        """
        if self._closed:
            raise RuntimeError("this Evaluator is closed")
        self._ensure_pool(self.pool_size)
        while wait:
            if not any(w.state == "starting" for w in self._workers):
                if len(self._live()) >= self.pool_size:
                    break
                self._ensure_pool(self.pool_size)  # replace those that died starting (bounded: _start_failed)
                continue
            self._wait_and_collect()

    def worker_pids(self) -> list[int]:
        """Host pids of the live workers' launchers (each leads its process group)."""
        return [w.proc.pid for w in self._live()]

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, candidates: Iterable[Candidate], train: bool = True, progress: bool = False) -> list[EvalRecord]:
        """Evaluate every candidate; the records come back in input order."""
        cands = list(candidates)
        out: list[EvalRecord | None] = [None] * len(cands)
        for index, rec in self._run([(c, None) for c in cands], train, progress):
            out[index] = rec
        return [r for r in out if r is not None]

    def evaluate_iter(
        self, candidates: Iterable[Candidate], train: bool = True, progress: bool = False
    ) -> Iterator[EvalRecord]:
        """Evaluate every candidate; yield each record as soon as it is complete (completion order)."""
        for _, rec in self._run([(c, None) for c in candidates], train, progress):
            yield rec

    def _evaluate_bypassing(
        self, candidates: Iterable[Candidate], bypass: str, train: bool = False
    ) -> list[EvalRecord]:
        """Test-only: ``bypass`` "policy" skips the static policy; "exec" runs the source with plain ``exec``.

        Needs the Evaluator built with ``_allow_bypass_for_tests=True``; the
        worker refuses a bypass otherwise. Exists to show that the process
        boundary holds when the code-level layers are gone.
        """
        if bypass not in ("policy", "exec"):
            raise ValueError(f"bypass must be 'policy' or 'exec', got {bypass!r}")
        cands = list(candidates)
        out: list[EvalRecord | None] = [None] * len(cands)
        for index, rec in self._run([(c, bypass) for c in cands], train, False):
            out[index] = rec
        return [r for r in out if r is not None]

    def _run(
        self, items: list[tuple[Candidate, str | None]], train: bool, progress: bool
    ) -> Iterator[tuple[int, EvalRecord]]:
        cands = [c for c, _ in items]
        if self._closed:
            raise RuntimeError("this Evaluator is closed")
        if self._busy_generator:
            raise RuntimeError("another evaluation of this Evaluator is still in progress")
        infos = {}
        for c in cands:
            name = c.dataset or self.data_cfg.name
            if name not in infos:
                infos[name] = self._dataset_info(name, write=train)
        pending = deque((i, c, b) for i, (c, b) in enumerate(items))
        bar = None
        if progress:
            from cenas_jax.progress import progress_bar

            bar = progress_bar(total=len(cands), file=sys.stderr, desc="evaluating", unit="cand")
        self._busy_generator = True
        try:
            for index, rec in self._refuse_oversized(pending):
                if bar is not None:
                    bar.update(1)
                yield index, rec
            while pending or any(w.state == "busy" for w in self._workers):
                busy = sum(w.state == "busy" for w in self._workers)
                self._ensure_pool(len(pending) + busy)
                for w in list(self._workers):
                    if w.state == "idle" and w.proc.poll() is not None:  # died while idle: not a candidate's fault
                        self._retire(w)
                        continue
                    if w.state == "idle" and pending:
                        index, cand, bypass = pending.popleft()
                        name = cand.dataset or self.data_cfg.name
                        self._dispatch(w, index, cand, infos[name], train, bypass)
                for index, rec in self._wait_and_collect():
                    if bar is not None:
                        bar.update(1)
                    yield index, rec
        finally:
            self._busy_generator = False
            if bar is not None:
                bar.close()
            for w in list(self._workers):  # abandoned mid-way: in-flight results would leak into the next call
                if w.state == "busy":
                    self._retire(w)

    def _refuse_oversized(self, pending: deque) -> list[tuple[int, EvalRecord]]:
        """Sources over ``max_source_bytes`` get their policy record here, without a trip to a worker."""
        out, keep = [], deque()
        limit = self.cfg.max_source_bytes
        for index, cand, bypass in pending:
            size = len(cand.source.encode("utf-8", errors="replace"))
            if size > limit and bypass is None:
                msg = f"[size] source is {size} bytes, the limit is {limit}"
                out.append((index, EvalRecord(cand.id, "error", "policy", msg, "policy", wall_s=0.0,
                                              dataset=cand.dataset or self.data_cfg.name)))  # fmt: skip
            else:
                keep.append((index, cand, bypass))
        pending.clear()
        pending.extend(keep)
        return out

    def _dispatch(
        self, w: _Worker, index: int, cand: Candidate, info: dict, train: bool, bypass: str | None = None
    ) -> None:
        task = {
            "type": "task",
            "bypass": bypass,
            "id": cand.id,
            "nonce": secrets.token_hex(8),  # echoed on every message of this task; anything else is a violation
            "source": cand.source,
            "train": bool(train),
            "num_classes": info["num_classes"],
            "input_shape": info["input_shape"],
            "data": info,
            "seed": self.seed,
            "max_params": self.cfg.max_params,
            "max_source_bytes": self.cfg.max_source_bytes,
        }
        w.task = (index, cand, info["name"])
        w.stage = None
        w.state = "busy"
        now = time.monotonic()
        w.dispatched = now
        w.frames = 0
        w.nonce = task["nonce"]
        w.check_deadline = now + self.cfg.check_timeout_s
        w.deadline = now + self.cfg.timeout_s
        try:
            w.send(task, timeout_s=self.cfg.check_timeout_s)
        except (OSError, TimeoutError):
            w.eof = True  # the worker is gone or stuck; collected as a crash below

    def _deadline(self, w: _Worker) -> float:
        if w.state == "starting":
            return w.started + self.cfg.startup_timeout_s
        if w.check_deadline is not None:
            return min(w.check_deadline, w.deadline)
        return w.deadline

    def _wait_and_collect(self) -> list[tuple[int, EvalRecord]]:
        """Wait (bounded by the nearest deadline) for worker messages; return finished records."""
        watched = [w for w in self._workers if w.state in ("starting", "busy")]
        if not watched:
            return []
        now = time.monotonic()
        wait = max(0.0, min(self._deadline(w) for w in watched) - now)
        fds = [w.results_r for w in watched if not w.eof]
        if fds:
            select.select(fds, [], [], min(wait, 1.0))
        done: list[tuple[int, EvalRecord]] = []
        for w in watched:
            try:
                messages = w.read()
            except Exception as e:  # noqa: BLE001 - protocol violation of any kind: that worker is killed
                messages = []
                self._violation(w, str(e))
            answered = None  # this worker's record from this batch, voided when an extra frame follows it
            for msg in messages:
                try:
                    out = self._handle(w, msg)
                except SandboxError:
                    raise  # the pool gives up (workers keep failing to start): not this worker's fault alone
                except Exception as e:  # noqa: BLE001 - a well-framed message with values of the wrong types
                    out = None
                    self._violation(w, f"{type(e).__name__} in a message: {e}")
                    if answered is not None:
                        index, rec = done[answered]
                        done[answered] = (index, dataclasses.replace(
                            rec, status="error", error_kind="crash", error_message=_text(f"protocol violation: {e}"),
                            accuracy=None, seed_accuracies=(), loss=None))  # fmt: skip
                if out is not None:
                    answered = len(done)
                    done.append(out)
                if w.state == "dead" or w.fatal:
                    break
            if w.state == "dead":
                continue
            if w.eof or w.proc.poll() is not None:
                out = self._worker_died(w)
                if out is not None:
                    done.append(out)
                continue
            if w.state in ("starting", "busy") and time.monotonic() >= self._deadline(w):
                out = self._timed_out(w)
                if out is not None:
                    done.append(out)
        return done

    def _violation(self, w: _Worker, why: str) -> None:
        """A worker broke the protocol: kill it now (a flooding worker never closes its pipe on its own)."""
        w.fatal = why[:MAX_MESSAGE_CHARS]
        w.eof = True
        if w.proc.poll() is None:
            w.killed_by_parent = True
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _handle(self, w: _Worker, msg: dict) -> tuple[int, EvalRecord] | None:
        kind = msg.get("type")
        if w.state == "starting":
            if kind == "ready":
                w.state = "idle"
                w.mode = msg.get("mode") if msg.get("mode") in ("full", "userns", "rlimits") else None
                w.notes = [str(n) for n in msg.get("notes", [])][:10]
                if w.mode is not None and w.mode != self.mode:  # namespaces failed: say what it runs with
                    self.mode = w.mode
                self._start_failures = 0
                if w.notes:
                    print(f"cenas sandbox: {'; '.join(w.notes)}", file=sys.stderr)
            elif kind == "fatal":
                self._start_failed(w, _text(msg.get("message")) or "unknown")
            return None
        if w.state != "busy" or w.task is None:
            raise ValueError(f"a message of type {_text(repr(kind))[:80]} after its task's result")
        if msg.get("nonce") != w.nonce:
            raise ValueError("a message without its task's nonce")
        if kind == "stage":
            stage = msg.get("stage")
            if not isinstance(stage, str) or stage not in STAGES:
                raise ValueError(f"unknown stage {_text(repr(stage))[:80]}")
            w.stage = stage
            if stage == "train":
                w.check_deadline = None
            return None
        if kind != "result":
            raise ValueError(f"unexpected message type {_text(repr(kind))[:80]} during a task")
        index, cand, dataset = w.task
        rec = _record_from_worker(cand.id, msg, time.monotonic() - w.dispatched, dataset)
        w.task = None
        w.state = "idle"
        w.tasks_done += 1
        spent = w.tasks_done >= self.cfg.max_tasks_per_worker
        if rec.error_kind == "memory" or msg.get("recycle") is True or spent:
            self._retire(w)
        return index, rec

    def _failure_record(self, w: _Worker, kind: str, message: str) -> tuple[int, EvalRecord] | None:
        if w.task is None:
            return None
        index, cand, dataset = w.task
        w.task = None
        rec = EvalRecord(
            candidate_id=cand.id,
            status="error",
            error_kind=kind,
            error_message=_text(message),
            stage=w.stage,
            wall_s=time.monotonic() - w.dispatched,
            dataset=dataset,
        )
        return index, rec

    def _worker_died(self, w: _Worker) -> tuple[int, EvalRecord] | None:
        was = w.state
        try:
            w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # closed its pipe but lives on: killed below
        code = w.proc.poll()
        tail = w.stderr_tail()
        self._retire(w)
        if was == "starting":
            self._start_failed_after_exit(code, tail)
            return None
        kind, message = _describe_exit(code)
        if w.fatal:
            kind, message = "crash", f"protocol violation: {w.fatal}"
        elif kind == "crash" and any(m in tail for m in _MEMORY_MARKERS):
            kind, message = "memory", f"{message}; it ran out of memory"
        if tail and kind != "timeout":
            message = f"{message}; stderr: ...{tail[-400:]}"
        return self._failure_record(w, kind, message)

    def _start_failed_after_exit(self, code: int | None, tail: str) -> None:
        self._start_failures += 1
        if self._start_failures >= _START_FAILURES_BEFORE_GIVING_UP:
            raise SandboxError(f"sandbox workers fail to start (exit code {code}):\n{tail}")

    def _timed_out(self, w: _Worker) -> tuple[int, EvalRecord] | None:
        if w.state == "starting":
            self._start_failed(w, f"not ready after {self.cfg.startup_timeout_s:.0f} s")
            return None
        cheap = w.check_deadline is not None and time.monotonic() >= w.check_deadline
        limit = self.cfg.check_timeout_s if cheap else self.cfg.timeout_s
        what = "the checks (syntax..budget)" if cheap else "the candidate"
        self._retire(w)
        message = f"{what} ran past the {limit:g} s wall-clock limit in stage {w.stage}"
        return self._failure_record(w, "timeout", message)

    # -- isolation report -----------------------------------------------------------------

    def probe_isolation(self) -> dict:
        """Start a worker and probe, from inside it, which isolation layers hold (``cenas sandbox check``).

        Returns ``{"mode", "notes", "layers": {layer: {"active", "detail"}}}``.
        The worker tries to create files at host paths (a package directory, the
        parent's temp dir); the parent then checks that none appeared.
        """
        import cenas_jax

        pkg_dir = os.path.dirname(os.path.abspath(cenas_jax.__file__))
        paths = [
            os.path.join(pkg_dir, f".cenas-probe-{os.getpid()}"),
            os.path.join(self._root, f"probe-{os.getpid()}"),
            os.path.join(tempfile.gettempdir(), f"cenas-probe-{os.getpid()}", "x"),
        ]
        self._ensure_pool(1)
        w = next(w for w in self._workers if w.state != "dead")
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while w.state == "starting":
            if time.monotonic() > deadline:
                self._start_failed(w, "not ready")
                raise SandboxError("the probe worker did not start")
            select.select([w.results_r], [], [], 1.0)
            try:
                messages = w.read()
            except ValueError as e:
                raise SandboxError(f"the probe worker broke the protocol: {e}") from None
            for msg in messages:
                self._handle(w, msg)
            if w.state == "starting" and (w.eof or w.proc.poll() is not None):
                tail = w.stderr_tail()
                self._retire(w)
                raise SandboxError(f"the probe worker died at start-up:\n{tail}")
        if w.state != "idle":  # it died starting: say why rather than write to a closed pipe
            raise SandboxError(f"the probe worker failed to start: {self.last_start_failure or 'no reason given'}")
        w.state = "busy"
        w.send({"type": "probe", "host_ns": isolation.host_namespaces(), "paths": paths, "parent_pid": os.getpid()})
        report = None
        deadline = time.monotonic() + 60
        while report is None and time.monotonic() < deadline:
            select.select([w.results_r], [], [], 1.0)
            for msg in w.read():
                if msg.get("type") == "probe":
                    report = msg
            if w.eof:
                break
        w.state = "idle"
        self._retire(w)  # a probed worker is not reused
        if report is None:
            raise SandboxError("the probe worker gave no report")
        layers = {k: v for k, v in report.get("report", {}).items() if isinstance(v, dict)}
        leaked = []
        for p in paths:
            for q in (p, os.path.dirname(p)):
                if os.path.exists(q) and q != tempfile.gettempdir() and q != self._root and q != pkg_dir:
                    leaked.append(q)
        for q in leaked:
            (shutil.rmtree if os.path.isdir(q) else os.remove)(q)
        layers["host_files_unchanged"] = {
            "active": not leaked,
            "detail": "no probe file appeared outside the sandbox" if not leaked else f"created {leaked}",
        }
        raw = report.get("report", {})
        devices = raw.get("jax_devices") if isinstance(raw.get("jax_devices"), list) else []
        return {"mode": w.mode or self.mode, "notes": report.get("notes", []), "layers": layers,
                "backend": (_text(raw.get("jax_backend")) or "")[:40],  # the worker's JAX, as it reported it
                "devices": [(_text(d) or "")[:120] for d in devices[:16]]}

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker and delete the sandbox's temporary files."""
        if self._closed:
            return
        self._closed = True
        for w in list(self._workers):
            if w.state == "idle":
                try:
                    w.send({"type": "exit"})
                except OSError:
                    pass
        self._finalizer()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Candidate", "EvalRecord", "Evaluator", "SandboxError", "STAGES", "default_workers"]
