"""The parent side of the sandbox: the ``Evaluator``, a pool of worker processes that turn candidate sources into records.

``Evaluator(data_cfg, train_cfg, sandbox_cfg).evaluate(candidates)`` returns
one ``EvalRecord`` per candidate, in input order; ``evaluate_iter`` yields
them as they complete. The calling process never imports or executes
candidate code: it only sends source text to workers (``worker.py``, each
held by a ``handle.WorkerHandle``) and reads JSON back (never pickle: the
worker is untrusted; ``records.py`` checks every value it reports).

Stages, each with its own error kind (DESIGN.md §3): syntax, policy, build,
shape, budget (``jax.eval_shape`` parameter count vs ``sandbox.max_params``),
then, when training, compile / nan / memory from the trainer. The parent adds
timeout (wall clock: ``sandbox.check_timeout_s`` for the cheap stages,
``sandbox.timeout_s`` for the whole candidate; the worker's process group is
killed and a fresh worker replaces it), crash (the worker died: segfault,
``os._exit``, SIGKILL) and memory (a worker that died saying so). Workers are
recycled after a crash, a timeout, a memory error, a task that left a Python
thread running, and after ``sandbox.max_tasks_per_worker`` tasks.

The persistent compilation cache is off inside workers (``train.compile_cache`` forced to false,
``jax_enable_compilation_cache`` off); each worker keeps JAX's in-memory cache for its lifetime. Why, and
what ``max_tasks_per_worker`` bounds: DESIGN.md §3 "Compilation cache".

Data: the datasets reach workers as read-only ``.npy`` files in the
Evaluator's temp root (``workspace.py``). Isolation layers and what held on
these machines: see ``isolation.py`` and ``cenas sandbox check`` (``probe.py``).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from cenas_jax.candidates import isolation, placement, probe, workspace
from cenas_jax.candidates.errors import SandboxError
from cenas_jax.candidates.handle import MEMORY_MARKERS, WorkerHandle, describe_exit
from cenas_jax.candidates.records import STAGES, Candidate, EvalRecord, clip_text, record_from_worker, voided
from cenas_jax.candidates.worker import MAX_MESSAGE_CHARS
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig, to_dict

BYPASSES = ("policy", "exec")  # what ``Evaluator.evaluate_bypassing`` can skip; see the Evaluator's docstring
_EXTRA_PROCESSES = 64  # threads/processes a worker may add beyond those it has when it drops to nobody
_START_FAILURES_BEFORE_GIVING_UP = 3


def _take(feed: queue.Queue, wait_s: float) -> tuple[list[Candidate], bool]:
    """What ``feed`` holds now (waiting up to ``wait_s`` for a first item), and whether it is still open."""
    got: list[Candidate] = []
    try:
        item = feed.get(timeout=wait_s) if wait_s > 0 else feed.get_nowait()
        while True:
            if item is None:
                return got, False
            got.append(item)
            item = feed.get_nowait()
    except queue.Empty:
        return got, True


def _cleanup(workers: list[WorkerHandle], root: str) -> None:
    for w in workers:
        if w.state != "dead":
            try:
                w.kill()
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                pass
    shutil.rmtree(root, ignore_errors=True)


class Evaluator:
    """A pool of sandboxed workers that evaluates candidates; use as a context manager or call ``close()``.

    ``seed`` keys the training (each candidate trains from
    ``fold_in(PRNGKey(seed), crc32(source))``, seed ``s`` from a further
    ``fold_in(., s)``). ``eval_split`` is the split trained candidates are
    scored on: "val" (the search) or "test" (final retraining only).
    ``inventory`` defaults to this host's (``placement.detect_inventory``).

    ``allow_layer_bypass`` (keyword-only, default False) lets
    ``evaluate_bypassing`` send candidates past the code-level layers: past the
    static policy ("policy"), or past the restricted builtins too, run with
    plain ``exec`` ("exec"). It exists so that the hostile-code tests can show
    that the process boundary holds on its own. Production never sets it: the
    static policy and the restricted builtins are layers of the design
    (DESIGN.md §3), a bypassed candidate runs without them, so no config key
    or CLI flag reaches this keyword. It travels in the worker's start-up spec,
    and a worker started without it refuses every bypassing task with a
    ``policy`` record.
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
        allow_layer_bypass: bool = False,
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
        workspace.remove_stale_roots()
        self._files = workspace.Workspace(data_cfg, eval_split)
        self._root = self._files.root
        self._workers: list[WorkerHandle] = []
        self._serial = 0
        self._start_failures = 0
        self.last_start_failure: str | None = None  # why the last worker that failed to start failed
        self._closed = False
        self._busy_generator = False
        train_dict = to_dict(dataclasses.replace(train_cfg, compile_cache=False))
        address_space = sandbox_cfg.memory_mb << 20 if self.platform == "cpu" else None
        self._spec = {
            "requested": sandbox_cfg.isolation,
            "mode": self.mode,
            "data_dir": self._files.data_dir,
            "tmpfs_mb": sandbox_cfg.tmpfs_mb,
            "expose": list(isolation.python_paths()),
            "package_root": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            "address_space": address_space,
            "cpu_time_s": int(sandbox_cfg.cpu_time_s),
            "cpu_hard_s": int(sandbox_cfg.cpu_time_s) * (sandbox_cfg.max_tasks_per_worker + 1) + 600,
            "extra_processes": _EXTRA_PROCESSES,
            "file_size": sandbox_cfg.file_size_mb << 20,
            "train_cfg": train_dict,
            "allow_bypass": bool(allow_layer_bypass),
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
            env["HOME"] = env["TMPDIR"] = self._files.work_root
        return env

    def _spawn(self, slot: int) -> WorkerHandle:
        self._serial += 1
        env = dict(self._env)
        env.update(self.placements[slot].env)  # the device pinning (empty on CPU)
        w = WorkerHandle(slot, self._serial, self._spec, env, self._files.log_dir, self._files.work_root)
        self._workers.append(w)
        return w

    # -- the pool -------------------------------------------------------------------------

    def _live(self) -> list[WorkerHandle]:
        return [w for w in self._workers if w.state != "dead"]

    def _retire(self, w: WorkerHandle) -> None:
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

    def _start_failed(self, w: WorkerHandle, why: str) -> None:
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

    def evaluate_bypassing(self, candidates: Iterable[Candidate], bypass: str, train: bool = False) -> list[EvalRecord]:
        """Evaluate every candidate past code-level layers; the records come back in input order.

        ``bypass``: "policy" skips the static policy (and the source-size
        refusal); "exec" also skips the restricted builtins, running the source
        with plain ``exec``. Only for an Evaluator built with
        ``allow_layer_bypass=True`` (see the class docstring: the hostile-code
        tests); any other refuses each candidate with a ``policy`` record
        ("bypassing the policy is disabled"), in the worker.
        """
        if bypass not in BYPASSES:
            raise ValueError(f"bypass must be 'policy' or 'exec', got {bypass!r}")
        cands = list(candidates)
        out: list[EvalRecord | None] = [None] * len(cands)
        for index, rec in self._run([(c, bypass) for c in cands], train, False):
            out[index] = rec
        return [r for r in out if r is not None]

    def evaluate_stream(
        self, feed: queue.Queue, train: bool = True, stop: threading.Event | None = None
    ) -> Iterator[EvalRecord]:
        """Evaluate candidates as they arrive on ``feed``; yield each record as soon as it is complete.

        ``feed`` holds ``Candidate``s and, last, ``None``: the stream ends once every candidate before it
        has its record. A set ``stop`` ends it at once, dropping the evaluations in flight (their workers
        are retired, as when an ``evaluate_iter`` is abandoned). A pool that stays up between batches of
        candidates that arrive over time: a Ray actor's (``ray_pool.py``).
        """
        return (rec for _, rec in self._run([], train, False, feed=feed, stop=stop))

    def _run(
        self, items: list[tuple[Candidate, str | None]], train: bool, progress: bool,
        feed: queue.Queue | None = None, stop: threading.Event | None = None,
    ) -> Iterator[tuple[int, EvalRecord]]:  # fmt: skip
        cands = [c for c, _ in items]
        if self._closed:
            raise RuntimeError("this Evaluator is closed")
        if self._busy_generator:
            raise RuntimeError("another evaluation of this Evaluator is still in progress")
        infos: dict[str, dict] = {}
        for c in cands:
            self._info(infos, c, train)
        pending = deque((i, c, b) for i, (c, b) in enumerate(items))
        bar = None
        if progress:
            from cenas_jax.progress import progress_bar

            bar = progress_bar(total=len(cands), file=sys.stderr, desc="evaluating", unit="cand")
        self._busy_generator = True
        feeding = feed is not None
        arrived = len(items)
        try:
            for index, rec in self._refuse_oversized(pending):
                if bar is not None:
                    bar.update(1)
                yield index, rec
            while pending or feeding or any(w.state == "busy" for w in self._workers):
                if stop is not None and stop.is_set():
                    return
                if feeding:
                    idle = not pending and not any(w.state == "busy" for w in self._workers)
                    new, feeding = _take(feed, wait_s=0.2 if idle else 0.0)
                    for c in new:
                        self._info(infos, c, train)
                    fresh = deque((arrived + i, c, None) for i, c in enumerate(new))
                    arrived += len(new)
                    yield from self._refuse_oversized(fresh)
                    pending.extend(fresh)
                    if idle and not pending:
                        continue
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

    def _info(self, infos: dict[str, dict], cand: Candidate, train: bool) -> None:
        """The worker's metadata of ``cand``'s dataset, exported (once) when training."""
        name = cand.dataset or self.data_cfg.name
        if name not in infos:
            infos[name] = self._files.dataset_info(name, write=train)

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
        self, w: WorkerHandle, index: int, cand: Candidate, info: dict, train: bool, bypass: str | None = None
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
            "seed_offset": cand.seed_offset,
            "seeds": cand.seeds,
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

    def _deadline(self, w: WorkerHandle) -> float:
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
                        done[answered] = (index, voided(rec, str(e)))
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

    def _violation(self, w: WorkerHandle, why: str) -> None:
        """A worker broke the protocol: kill it now (a flooding worker never closes its pipe on its own)."""
        w.fatal = why[:MAX_MESSAGE_CHARS]
        w.eof = True
        if w.proc.poll() is None:
            w.killed_by_parent = True
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _handle(self, w: WorkerHandle, msg: dict) -> tuple[int, EvalRecord] | None:
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
                self._start_failed(w, clip_text(msg.get("message")) or "unknown")
            return None
        if w.state != "busy" or w.task is None:
            raise ValueError(f"a message of type {clip_text(repr(kind))[:80]} after its task's result")
        if msg.get("nonce") != w.nonce:
            raise ValueError("a message without its task's nonce")
        if kind == "stage":
            stage = msg.get("stage")
            if not isinstance(stage, str) or stage not in STAGES:
                raise ValueError(f"unknown stage {clip_text(repr(stage))[:80]}")
            w.stage = stage
            if stage == "train":
                w.check_deadline = None
            return None
        if kind != "result":
            raise ValueError(f"unexpected message type {clip_text(repr(kind))[:80]} during a task")
        index, cand, dataset = w.task
        rec = record_from_worker(cand.id, msg, time.monotonic() - w.dispatched, dataset)
        w.task = None
        w.state = "idle"
        w.tasks_done += 1
        spent = w.tasks_done >= self.cfg.max_tasks_per_worker
        if rec.error_kind == "memory" or msg.get("recycle") is True or spent:
            self._retire(w)
        return index, rec

    def _failure_record(self, w: WorkerHandle, kind: str, message: str) -> tuple[int, EvalRecord] | None:
        if w.task is None:
            return None
        index, cand, dataset = w.task
        w.task = None
        rec = EvalRecord(
            candidate_id=cand.id,
            status="error",
            error_kind=kind,
            error_message=clip_text(message),
            stage=w.stage,
            wall_s=time.monotonic() - w.dispatched,
            dataset=dataset,
        )
        return index, rec

    def _worker_died(self, w: WorkerHandle) -> tuple[int, EvalRecord] | None:
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
        kind, message = describe_exit(code)
        if w.fatal:
            kind, message = "crash", f"protocol violation: {w.fatal}"
        elif kind == "crash" and any(m in tail for m in MEMORY_MARKERS):
            kind, message = "memory", f"{message}; it ran out of memory"
        if tail and kind != "timeout":
            message = f"{message}; stderr: ...{tail[-400:]}"
        return self._failure_record(w, kind, message)

    def _start_failed_after_exit(self, code: int | None, tail: str) -> None:
        self._start_failures += 1
        if self._start_failures >= _START_FAILURES_BEFORE_GIVING_UP:
            raise SandboxError(f"sandbox workers fail to start (exit code {code}):\n{tail}")

    def _timed_out(self, w: WorkerHandle) -> tuple[int, EvalRecord] | None:
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

        Returns ``{"mode", "notes", "layers": {layer: {"active", "detail"}}, "backend", "devices"}``.
        The worker tries to create files at host paths (a package directory, the
        parent's temp dir); the parent then checks that none appeared (``probe.py``).
        """
        paths = probe.probe_paths(self._root)
        w = self._probe_worker()
        w.state = "busy"
        report = probe.ask(w, paths)
        w.state = "idle"
        self._retire(w)  # a probed worker is not reused
        return probe.summarize(report, paths, self._root, w.mode or self.mode)

    def _probe_worker(self) -> WorkerHandle:
        """A worker of its own for the probe, started and ready; SandboxError when it cannot start."""
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
        return w

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
