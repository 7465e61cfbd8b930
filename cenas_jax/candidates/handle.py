"""One sandbox worker process seen from the parent: its start, its pipes, its end.

``WorkerHandle`` starts ``worker.py`` in its own process group (so that a
timeout kills the whole tree: launcher, pid-1, worker, its children) with three
pipes (tasks, results, a lifeline), writes tasks without ever blocking past a
deadline, and reads results in bounded amounts: at most ``_READ_BYTES_PER_CALL``
per call, so that a worker flooding its pipe cannot keep the parent from its
deadlines, and at most ``_MAX_FRAMES_PER_TASK`` messages per task. What the
messages say is judged by the Evaluator (``evaluator.py``) and ``records.py``;
``describe_exit`` says how a worker that died on its own ended.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from cenas_jax.candidates.records import Candidate
from cenas_jax.candidates.worker import FrameBuffer, encode_frame

_READ_BYTES_PER_CALL = 4 << 20  # per worker per pass of the read loop
_MAX_FRAMES_PER_TASK = 256  # a task sends about ten (stages, one result); more is a flood
_STDERR_TAIL = 1500

# The worker's entry point (``{root}``: the directory holding the package); the protocol tests put a fake
# worker here.
WORKER_BOOT = "import sys; sys.path.insert(0, {root!r}); from cenas_jax.candidates.worker import main; main()"

# Words in a dead worker's stderr that say it ran out of memory.
MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED", "bad_alloc", "Cannot allocate memory", "out of memory",
                  "Out of memory")  # fmt: skip


class WorkerHandle:
    """A worker process and its pipes; ``state`` is starting | idle | busy | dead.

    ``spec`` is the worker's start-up spec (the pipes' descriptors and its work
    directory are added here), ``env`` its whole environment; its stdout and
    stderr go to ``log_dir/worker-{serial}.log``, its work directory is a fresh
    one under ``work_root``.
    """

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
        boot = WORKER_BOOT.format(root=spec["package_root"])
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


def describe_exit(code: int | None) -> tuple[str, str]:
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
