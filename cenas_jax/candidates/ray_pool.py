"""The Ray backend (``sandbox.backend: ray``): sandbox pools hosted by Ray actors, one per node or GPU group.

``RayEvaluator`` has the interface of the local ``Evaluator`` that its callers use (``start``,
``evaluate``, ``evaluate_iter``, ``close``, a context manager). It starts ``SandboxActor``s on a Ray
cluster; each builds our own ``Evaluator`` on its node, with one worker per GPU Ray gave it
(``placement.py``) or ``sandbox.workers`` on a CPU actor, and exports the dataset there. Candidate code
runs only in those sandbox workers, never in an actor or in this process. Only JSON crosses Ray: candidate
sources in, ``EvalRecord.to_dict()``s out, and the driver parses each actor's reply as untrusted bytes
(``records.record_from_json``).

The driver keeps each actor's workers busy (its pool size, plus one candidate queued in the actor so a
freed worker never waits for a round trip). An actor that is lost (killed, its node gone) or that fails
has its candidates in flight put back at the head of the queue and evaluated by the others, or by a
replacement; a candidate is never lost and never yielded twice (each dispatch has a token; only the
token's own actor can answer it, once). A candidate whose actor was lost ``_MAX_LOSSES`` times gets a
``crash`` record. With every actor gone and none able to start, the evaluation stops with a
``SandboxError``. DESIGN.md §7 "Ray".

Ray is an optional extra: it is imported here only, when a ``RayEvaluator`` is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from cenas_jax.candidates import placement
from cenas_jax.candidates.errors import SandboxError
from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate, EvalRecord, clip_text, record_from_json
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig, from_dict, to_dict
from cenas_jax.errors import UserError

INSTALL_HINT = "pip install -e '.[ray]'"
_POLL_S = 1.0  # an actor's exchange answers after this long without a record
_SPARE = 1  # candidates queued in an actor beyond its workers
_MAX_LOSSES = 3  # a candidate whose actor was lost this many times is recorded as a crash, not retried again
_REPLACEMENTS_PER_ACTOR = 2  # replacement actors allowed per actor of the plan, over the pool's life
_START_MARGIN_S = 120.0  # beyond sandbox.startup_timeout_s: Ray starts the actor's process and places it
_CLOSE_TIMEOUT_S = 30.0
_MAX_REPLY_CHARS = 64 << 20  # an actor's reply: records of at most a few hundred candidates


def import_ray() -> Any:
    """The ``ray`` module, or a ``UserError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"sandbox.backend: ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


def check_installed() -> None:
    """A ``UserError`` unless Ray can be imported; cheap (nothing is imported): for checks before a run starts."""
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"sandbox.backend: ray needs Ray, an optional extra: {INSTALL_HINT}")


def plan_actors(nodes: Sequence[dict], cfg: SandboxConfig) -> tuple[int, int]:
    """(number of actors, GPUs per actor) for a cluster whose alive nodes have the resources ``nodes``
    (``ray.nodes()[i]["Resources"]``). Pure, so that every case is tested without a cluster."""
    gpu_counts = [int(n.get("GPU", 0)) for n in nodes]
    gpus = cfg.ray_gpus_per_actor
    if gpus == -1:
        gpus = min((c for c in gpu_counts if c > 0), default=0)
    if gpus == 0:
        return (cfg.ray_actors or max(1, len(nodes))), 0
    groups = sum(c // gpus for c in gpu_counts)
    if groups == 0:
        have = ", ".join(str(c) for c in gpu_counts) or "no nodes"
        raise UserError(f"sandbox.ray_gpus_per_actor={gpus}: no node of the Ray cluster has that many GPUs "
                        f"(GPUs per node: {have}); set it to 0 for CPU actors")  # fmt: skip
    return (cfg.ray_actors or groups), gpus


def cpus_per_actor(cfg: SandboxConfig) -> int:
    """CPUs an actor books with Ray: its workers' threads when ``sandbox.workers`` is set, else one (the actor
    then starts its pool's default size: one worker per core of a CPU node, per GPU it holds)."""
    return cfg.workers * cfg.threads_per_worker if cfg.workers else 1


# ---------------------------------------------------------------------------
# The actor: runs on a Ray node, hosts one sandbox pool there
# ---------------------------------------------------------------------------


class SandboxActor:
    """Our sandbox ``Evaluator`` on a Ray node (wrapped with ``ray.remote`` by ``RayEvaluator``).

    Built from JSON (the configs, the key seed, the split and the GPUs it holds); ``describe()`` says what it
    runs with, ``start()`` starts its workers, ``exchange(batch, wait_s)`` hands it candidates and returns
    the records completed since the last call. Its pool runs in a thread of its own
    (``Evaluator.evaluate_stream``), so workers freed by a record take queued candidates at once.
    """

    def __init__(self, config_json: str) -> None:
        cfg = json.loads(config_json)
        data_cfg = from_dict(DataConfig, cfg["data"])
        train_cfg = from_dict(TrainConfig, cfg["train"])
        sandbox_cfg = from_dict(SandboxConfig, {**cfg["sandbox"], "backend": "local"})
        self.gpus = int(cfg["gpus"])
        self.inventory = self._inventory()
        self.ev = Evaluator(data_cfg, train_cfg, sandbox_cfg, seed=int(cfg["seed"]), eval_split=cfg["eval_split"],
                            inventory=self.inventory)  # fmt: skip
        self._feed: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._train: bool | None = None
        self._out: queue.Queue = queue.Queue()
        self._held = 0  # candidates handed to the pool and not yet returned
        self._failure: str | None = None

    def _inventory(self) -> placement.Inventory:
        """The devices Ray gave this actor: ``CUDA_VISIBLE_DEVICES`` as Ray set it, or the CPU."""
        cpu = placement.detect_inventory(environ={"JAX_PLATFORMS": "cpu"})
        if self.gpus == 0:
            return cpu
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = tuple(v.strip() for v in visible.split(",") if v.strip())
        if not ids:
            ids = tuple(str(g) for g in import_ray().get_gpu_ids())
        return placement.Inventory("gpu", ids, cpu.cores)

    def describe(self) -> str:
        """What this actor runs with, as JSON: node, pid, Ray's ``CUDA_VISIBLE_DEVICES``, the inventory, each
        worker's environment from its placement, the pool size and the live workers' pids."""
        return json.dumps({
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "inventory": dataclasses.asdict(self.inventory),
            "placements": [dict(p.env) for p in self.ev.placements],
            "pool_size": self.ev.pool_size,
            "worker_pids": self.ev.worker_pids(),
            "mode": self.ev.mode,
        })

    def start(self) -> str:
        """Start every worker of the pool (``SandboxError`` when they cannot start); then ``describe()``."""
        self.ev.start(wait=True)
        return self.describe()

    def _serve(self, feed: queue.Queue, stop: threading.Event, train: bool) -> None:
        try:
            for rec in self.ev.evaluate_stream(feed, train=train, stop=stop):
                self._out.put(rec)
        except BaseException as e:  # noqa: BLE001 - reported to the driver by the next exchange
            self._failure = clip_text(f"{type(e).__name__}: {e}")

    def _stream(self, train: bool) -> queue.Queue:
        """The running stream for ``train`` (one ends, when idle, for a call of the other kind)."""
        if self._thread is not None and self._train != train:
            self._feed.put(None)  # the driver sends the other kind only once the last call's records are back
            self._thread.join()
            self._thread = None
        if self._thread is None:
            self._feed, self._stop, self._train = queue.Queue(), threading.Event(), train
            self._thread = threading.Thread(target=self._serve, args=(self._feed, self._stop, train), daemon=True,
                                            name="cenas-sandbox-stream")  # fmt: skip
            self._thread.start()
        return self._feed

    def exchange(self, batch_json: str, wait_s: float) -> str:
        """Queue the batch's candidates (JSON: ``{"train", "candidates": [{"token", "source", "dataset",
        "seed_offset", "seeds"}]}``); return, as JSON ``{"records": [{"token", "record"}]}``, the records
        completed so far, waiting up to ``wait_s`` for a first one while candidates are held."""
        batch = json.loads(batch_json)
        if batch["candidates"]:
            feed = self._stream(bool(batch["train"]))
            for c in batch["candidates"]:
                feed.put(Candidate(c["token"], c["source"], c.get("dataset"), c.get("seed_offset") or 0,
                                   c.get("seeds")))  # fmt: skip
                self._held += 1
        out: list[EvalRecord] = []
        try:
            if self._held and self._failure is None:
                out.append(self._out.get(timeout=wait_s))
            while True:
                out.append(self._out.get_nowait())
        except queue.Empty:
            pass
        self._held -= len(out)
        if self._failure is not None and not out:
            raise SandboxError(f"the sandbox pool on this node failed: {self._failure}")
        return json.dumps({"records": [{"token": r.candidate_id, "record": r.to_dict()} for r in out]})

    def cancel(self) -> None:
        """Drop every candidate in flight (their workers are retired); records not yet returned are dropped."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        while not self._out.empty():
            self._out.get_nowait()
        self._held = 0

    def close(self) -> None:
        """Cancel what is in flight and stop the pool (its workers, its files)."""
        self.cancel()
        self.ev.close()


# ---------------------------------------------------------------------------
# The driver side
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Task:
    token: str
    index: int
    cand: Candidate
    actor: int  # the key of the actor it was sent to
    sent: float
    losses: int = 0  # actors lost while they held it


@dataclasses.dataclass
class _Actor:
    key: int
    handle: Any
    state: str = "starting"  # starting | ready
    ref: Any = None  # the outstanding call: start(), or the last exchange()
    started: float = 0.0
    deadline: float = 0.0  # a starting actor must be ready by then
    capacity: int = 1
    in_flight: set[str] = dataclasses.field(default_factory=set)
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ActorView:
    """One actor of the pool as the driver sees it: its Ray handle, what it reported at start, the ids of
    the candidates it holds."""

    key: int
    handle: Any
    state: str
    info: dict
    in_flight: tuple[str, ...]


class RayEvaluator:
    """Sandbox pools on Ray actors, with the local ``Evaluator``'s interface; a context manager.

    ``sandbox_cfg.ray_address`` ("" starts a local Ray; else the cluster to join), ``ray_actors`` and
    ``ray_gpus_per_actor`` place the actors (``plan_actors``). A Ray already initialised in this process is
    used as it is and left running. ``actor_class`` replaces ``SandboxActor`` (tests).
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        train_cfg: TrainConfig,
        sandbox_cfg: SandboxConfig,
        *,
        seed: int = 0,
        eval_split: str = "val",
        actor_class: type | None = None,
    ) -> None:
        if eval_split not in ("val", "test"):
            raise ValueError(f"eval_split must be 'val' (search) or 'test' (final retrain), got {eval_split!r}")
        self.ray = import_ray()
        self.data_cfg, self.train_cfg, self.cfg = data_cfg, train_cfg, sandbox_cfg
        self.seed = int(seed)
        self.eval_split = eval_split
        self._actor_class = actor_class or SandboxActor
        self._remote: Any = None  # the actor class as Ray's, with its resources
        self._actors: list[_Actor] = []
        self._tasks: dict[str, _Task] = {}
        self._keys = itertools.count()
        self._tokens = itertools.count()
        self._owns_ray = False
        self._planned: tuple[int, int] | None = None
        self._replacements_left = 0
        self._closed = False
        self._busy = False
        self.losses: list[str] = []  # why each lost actor was lost, in order
        self.stale_records = 0  # records with a token that is not (or no longer) their actor's: dropped

    # -- set-up ---------------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.cfg.ray_address or None
        try:
            ray.init(address=address, include_dashboard=False if address is None else None, log_to_driver=True)
        except ConnectionError as e:
            raise UserError(f"sandbox.ray_address={self.cfg.ray_address!r}: cannot join the Ray cluster: {e}") from None
        self._owns_ray = address is None

    def _plan(self) -> tuple[int, int]:
        if self._planned is None:
            nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
            self._planned = plan_actors(nodes, self.cfg)
            self._replacements_left = _REPLACEMENTS_PER_ACTOR * self._planned[0]
        return self._planned

    def _config_json(self, gpus: int) -> str:
        return json.dumps({"data": to_dict(self.data_cfg), "train": to_dict(self.train_cfg),
                           "sandbox": to_dict(self.cfg), "seed": self.seed, "eval_split": self.eval_split,
                           "gpus": gpus})  # fmt: skip

    def _spawn(self) -> _Actor:
        _, gpus = self._plan()
        if self._remote is None:
            self._remote = self.ray.remote(self._actor_class).options(
                num_cpus=cpus_per_actor(self.cfg), num_gpus=gpus, max_restarts=0, max_task_retries=0,
                scheduling_strategy="SPREAD",  # our replacements, not Ray's restarts: see _lost
            )  # fmt: skip
        handle = self._remote.remote(self._config_json(gpus))
        a = _Actor(key=next(self._keys), handle=handle)
        self._actors.append(a)
        return a

    def _create(self) -> None:
        """The plan's actors, built (their pools not started)."""
        if self._closed:
            raise RuntimeError("this RayEvaluator is closed")
        self._connect()
        if not self._actors:
            n, _ = self._plan()
            for _ in range(n):
                self._spawn()

    def _boot(self, a: _Actor) -> None:
        a.state = "starting"
        a.ref = a.handle.start.remote()
        a.started = time.monotonic()
        a.deadline = a.started + self.cfg.startup_timeout_s + _START_MARGIN_S

    def describe(self) -> list[dict]:
        """Each actor's own description (``SandboxActor.describe``), its pool not started: what its workers
        would be started with."""
        self._create()
        out = []
        for a in self._actors:
            out.append(json.loads(self.ray.get(a.handle.describe.remote(), timeout=self.cfg.startup_timeout_s)))
        return out

    def start(self, wait: bool = True) -> None:
        """Start the actors and their pools; with ``wait``, return once every actor that could start is ready.

        Raises ``SandboxError`` when none can start.
        """
        self._create()
        for a in self._actors:
            if a.ref is None and a.state == "starting":
                self._boot(a)
        while wait and any(a.state == "starting" for a in self._actors):
            refs = {a.ref: a for a in self._actors if a.state == "starting"}
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=1.0)
            for ref in done:
                for _ in self._receive(refs[ref], deque()):
                    pass
            self._expire_starts(deque())
            if not self._actors:
                raise SandboxError(self._gone_message())

    def actors(self) -> list[ActorView]:
        """The pool's actors now (tests and tools: ``ray.kill(view.handle)``)."""
        return [ActorView(a.key, a.handle, a.state, dict(a.info),
                          tuple(self._tasks[t].cand.id for t in sorted(a.in_flight, key=lambda t: int(t[1:]))))
                for a in self._actors]  # fmt: skip

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, candidates: Iterable[Candidate], train: bool = True, progress: bool = False) -> list[EvalRecord]:
        """Evaluate every candidate; the records come back in input order."""
        cands = list(candidates)
        out: list[EvalRecord | None] = [None] * len(cands)
        for index, rec in self._run(cands, train, progress):
            out[index] = rec
        return [r for r in out if r is not None]

    def evaluate_iter(
        self, candidates: Iterable[Candidate], train: bool = True, progress: bool = False
    ) -> Iterator[EvalRecord]:
        """Evaluate every candidate; yield each record as soon as it is complete (completion order)."""
        for _, rec in self._run(list(candidates), train, progress):
            yield rec

    def _run(self, cands: list[Candidate], train: bool, progress: bool) -> Iterator[tuple[int, EvalRecord]]:
        if self._closed:
            raise RuntimeError("this RayEvaluator is closed")
        if self._busy:
            raise RuntimeError("another evaluation of this RayEvaluator is still in progress")
        self._busy = True
        bar = None
        if progress:
            from cenas_jax.progress import progress_bar

            bar = progress_bar(total=len(cands), file=sys.stderr, desc="evaluating", unit="cand")
        pending: deque[tuple[int, Candidate, int]] = deque((i, c, 0) for i, c in enumerate(cands))
        try:
            if pending:
                self.start(wait=False)
            while pending or self._tasks:
                self._dispatch(pending, train)
                refs = {a.ref: a for a in self._actors if a.ref is not None}
                if not refs:
                    raise SandboxError(self._gone_message())
                done, _ = self.ray.wait(list(refs), num_returns=1, timeout=_POLL_S + 1.0)
                if done:
                    done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
                for ref in done:
                    for index, rec in self._receive(refs[ref], pending):
                        if bar is not None:
                            bar.update(1)
                        yield index, rec
                for index, rec in self._expire_starts(pending):
                    yield index, rec
        finally:
            self._busy = False
            if bar is not None:
                bar.close()
            if self._tasks:  # abandoned mid-way: the actors drop what they hold for this call
                self._cancel_in_flight()

    def _dispatch(self, pending: deque, train: bool) -> None:
        """Hand each ready actor without a call in progress the candidates it has room for, and a call to
        wait on. A candidate whose actor was lost goes to an actor that holds nothing else, and alone: if it
        is what kills actors, it takes no other candidate with it the next time."""
        for a in self._actors:
            if a.state != "ready" or a.ref is not None:
                continue
            batch = []
            while pending and len(a.in_flight) < a.capacity:
                if any(self._tasks[t].losses for t in a.in_flight) or (pending[0][2] and a.in_flight):
                    break
                index, cand, losses = pending.popleft()
                token = f"t{next(self._tokens)}"
                self._tasks[token] = _Task(token, index, cand, a.key, time.monotonic(), losses)
                a.in_flight.add(token)
                batch.append({"token": token, "source": cand.source, "dataset": cand.dataset,
                              "seed_offset": cand.seed_offset, "seeds": cand.seeds})  # fmt: skip
            if batch or a.in_flight:
                a.ref = a.handle.exchange.remote(json.dumps({"train": bool(train), "candidates": batch}), _POLL_S)

    def _receive(self, a: _Actor, pending: deque) -> list[tuple[int, EvalRecord]]:
        """The outcome of ``a``'s finished call: ready, records, or the actor lost."""
        ref, a.ref = a.ref, None
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            return self._lost(a, _ray_error_text(e), pending)
        if a.state == "starting":
            try:
                info = json.loads(reply)
                if not isinstance(info, dict):
                    raise ValueError("not an object")
                size = int(info.get("pool_size", 1))
            except (TypeError, ValueError) as e:
                return self._lost(a, f"a malformed start-up reply ({e})", pending)
            a.info, a.state, a.capacity = info, "ready", max(1, size) + _SPARE
            return []
        try:
            entries = _parse_reply(reply)
        except ValueError as e:
            return self._broken(a, f"protocol violation: the Ray actor sent a malformed reply: {e}")
        out = []
        for token, value in entries:
            task = self._tasks.get(token)
            if task is None or task.actor != a.key:
                self.stale_records += 1
                continue
            del self._tasks[token]
            a.in_flight.discard(token)
            dataset = task.cand.dataset or self.data_cfg.name
            out.append((task.index, record_from_json(task.cand.id, value, time.monotonic() - task.sent, dataset)))
        return out

    def _lost(self, a: _Actor, why: str, pending: deque) -> list[tuple[int, EvalRecord]]:
        """``a`` is gone: its candidates go back to the head of the queue (or, lost too often, get a crash
        record), and a replacement starts while the budget lasts."""
        self._drop(a)
        self.losses.append(why)
        print(f"cenas sandbox (ray): actor {a.key} lost ({len(a.in_flight)} candidate(s) in flight, "
              f"rescheduled): {why}", file=sys.stderr, flush=True)  # fmt: skip
        out, back = [], []
        for token in a.in_flight:
            task = self._tasks.pop(token)
            losses = task.losses + 1
            if losses >= _MAX_LOSSES:
                out.append((task.index, self._error(task, f"its Ray actor was lost {losses} times while evaluating "
                                                          f"it; the last time: {why}")))  # fmt: skip
            else:
                back.append((task.index, task.cand, losses))
        for item in sorted(back, reverse=True):
            pending.appendleft(item)
        a.in_flight.clear()
        if self._replacements_left > 0 and not self._closed:
            self._replacements_left -= 1
            self._boot(self._spawn())
        return out

    def _broken(self, a: _Actor, why: str) -> list[tuple[int, EvalRecord]]:
        """``a`` broke the protocol: it is killed and what it held is recorded as a crash (not retried:
        nothing it said can be trusted, as with a worker that breaks the protocol)."""
        self._drop(a)
        self.losses.append(why)
        out = [(self._tasks[t].index, self._error(self._tasks.pop(t), why)) for t in sorted(a.in_flight)]
        a.in_flight.clear()
        if self._replacements_left > 0 and not self._closed:
            self._replacements_left -= 1
            self._boot(self._spawn())
        return out

    def _error(self, task: _Task, message: str) -> EvalRecord:
        return EvalRecord(task.cand.id, "error", "crash", clip_text(message), None,
                          wall_s=time.monotonic() - task.sent, dataset=task.cand.dataset or self.data_cfg.name)  # fmt: skip

    def _drop(self, a: _Actor) -> None:
        if a in self._actors:
            self._actors.remove(a)
        try:
            self.ray.kill(a.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _expire_starts(self, pending: deque) -> list[tuple[int, EvalRecord]]:
        """Actors not ready by their deadline (no room on the cluster, a node that never came) are given up."""
        now = time.monotonic()
        out = []
        for a in [a for a in self._actors if a.state == "starting" and now > a.deadline]:
            out += self._lost(a, f"not ready after {now - a.started:.0f} s (no room on the cluster?)", pending)
        return out

    def _gone_message(self) -> str:
        last = "; ".join(self.losses[-3:]) or "none started"
        return (f"every Ray actor of the sandbox pool is lost and none can be started again "
                f"({len(self.losses)} lost; the last: {last})")  # fmt: skip

    def _cancel_in_flight(self) -> None:
        for a in list(self._actors):
            if not a.in_flight:
                continue
            for token in a.in_flight:
                self._tasks.pop(token, None)
            a.in_flight.clear()
            try:
                self.ray.get(a.handle.cancel.remote(), timeout=_CLOSE_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - an actor that cannot cancel is replaced when next needed
                self._drop(a)
                self.losses.append(f"cancel failed: {_ray_error_text(e)}")
        self._tasks.clear()

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every actor (its workers, its files) and, when this pool started Ray, Ray."""
        if self._closed:
            return
        self._closed = True
        refs = []
        for a in self._actors:
            if a.state == "starting" and a.ref is not None:
                continue  # a close() would wait behind its start(): the kill below ends it (and its workers)
            try:
                refs.append(a.handle.close.remote())
            except Exception:  # noqa: BLE001 - gone already
                pass
        if refs:
            try:
                self.ray.wait(refs, num_returns=len(refs), timeout=_CLOSE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - best effort; the kill below ends them
                pass
        for a in list(self._actors):
            self._drop(a)
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _parse_reply(reply: Any) -> list[tuple[str, Any]]:
    """An actor's exchange reply, untrusted: ``{"records": [{"token": str, "record": ...}]}``; ValueError
    when it is anything else. The records themselves are checked by ``records.record_from_json``."""
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", errors="replace")
    if not isinstance(reply, str):
        raise ValueError(f"a {clip_text(type(reply).__name__)} instead of JSON text")
    if len(reply) > _MAX_REPLY_CHARS:
        raise ValueError(f"{len(reply)} characters, the limit is {_MAX_REPLY_CHARS}")
    try:
        doc = json.loads(reply)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON ({clip_text(e)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise ValueError("not an object with a list of records")
    out = []
    for entry in doc["records"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise ValueError("a record without its token")
        out.append((entry["token"], entry.get("record")))
    return out


def _ray_error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return clip_text(" ".join(text.split()))[:600]
