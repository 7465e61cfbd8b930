"""The processes of a ``--distributed`` run and the messages between them (DESIGN.md §7 "Many hosts").

``jax.distributed`` gives every process the coordination service's key-value store; that is the only channel
used for control messages (JSON): process 0 posts numbered operations (``op/<seq>``), the others post their
results under keys process 0 names. Collectives (the CE update, broadcasting adapters) go through XLA
(gloo on CPU). Each process also posts a heartbeat counter (``hb/<pid>``) once a second from a thread; a
peer whose counter has not moved for ``dead_after_s`` is lost, and so is process 0 when the store stops
answering. A lost peer ends the run at its last checkpoint (``PeerLost``, a ``StopRequested``): the
survivors never wait out JAX's heartbeat timeout and are never aborted by it (``initialize`` turns on
``jax_enable_recoverability``, under which a dead task does not take the others down).

``resolve`` and ``initialize`` set the group up from flags, the environment or the cluster's own detection.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cenas_jax.errors import UserError
from cenas_jax.search.stopping import StopRequested

# Our environment variables (JAX reads JAX_COORDINATOR_ADDRESS itself; the count and the id it takes from flags
# or a cluster it detects: Slurm, Open MPI, Kubernetes, Cloud TPU). `cenas launch` sets all three.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# A value larger than this is posted in parts (the store's messages are gRPC messages, 4 MiB at most).
PART_BYTES = 1 << 20
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 30.0


class PeerLost(StopRequested):
    """Another process of a distributed run stopped answering; this one ends at its last checkpoint."""

    external = True


@dataclass(frozen=True)
class DistributedSpec:
    """Where the coordinator is and who this process is; None: left to JAX's cluster detection."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def resolve(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            env: Mapping[str, str] | None = None) -> DistributedSpec:
    """Flags first, then ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``; what is still
    unset is left to JAX's cluster detection (TPU VMs, Slurm, Open MPI, Kubernetes)."""
    env = os.environ if env is None else env

    def number(value: Any, name: str) -> int | None:
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"{name}: expected an integer, got {value!r}") from None

    spec = DistributedSpec(
        coordinator=coordinator or env.get(ENV_COORDINATOR) or None,
        num_processes=number(num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES),
                             f"--num-processes / {ENV_NUM_PROCESSES}"),
        process_id=number(process_id if process_id is not None else env.get(ENV_PROCESS_ID),
                          f"--process-id / {ENV_PROCESS_ID}"),
    )
    if spec.num_processes is not None and spec.num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {spec.num_processes}")
    if spec.process_id is not None and spec.num_processes is not None and not 0 <= spec.process_id < spec.num_processes:
        raise UserError(f"--process-id {spec.process_id} is not in 0..{spec.num_processes - 1}")
    return spec


def initialize(spec: DistributedSpec, *, init_timeout_s: int = 300, peer_timeout_s: float = DEAD_AFTER_S) -> Group:
    """Join the run's processes (``jax.distributed.initialize``) before anything uses a JAX backend."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.config.update("jax_enable_recoverability", True)  # a dead peer is ours to handle (PeerLost), not an abort
    kw: dict[str, Any] = {}
    if spec.coordinator and spec.coordinator.rsplit(":", 1)[0] in ("localhost", "127.0.0.1"):
        kw["coordinator_bind_address"] = spec.coordinator  # one machine: no need to listen on every interface
    try:
        jax.distributed.initialize(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                                   process_id=spec.process_id, initialization_timeout=init_timeout_s, **kw)
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"--distributed: {e}. Give the coordinator address, process count and process id as flags "
            f"(--coordinator HOST:PORT --num-processes N --process-id I) or as {ENV_COORDINATOR}, "
            f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}, or run under a cluster JAX detects (Slurm, a TPU VM, "
            f"Open MPI, Kubernetes); `cenas launch --local-processes N` starts N on this machine") from None
    from jax._src.distributed import global_state

    group = Group(global_state.client, jax.process_index(), jax.process_count(), dead_after_s=peer_timeout_s)
    group.start_heartbeat()
    return group


class Group:
    """This process's view of the run's processes: post and read JSON under keys, watch the others' heartbeats.

    ``client`` is the coordination service's client (``key_value_set``, ``key_value_try_get``,
    ``blocking_key_value_get``, ``key_value_delete``); tests give an in-memory one."""

    def __init__(self, client: Any, process_id: int, num_processes: int, *, heartbeat_s: float = HEARTBEAT_S,
                 dead_after_s: float = DEAD_AFTER_S) -> None:
        self.client = client
        self.process_id = process_id
        self.num_processes = num_processes
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        self._seen: dict[int, tuple[str | None, float]] = {}  # pid -> (last counter, when it last moved)
        self._beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_primary(self) -> bool:
        return self.process_id == 0

    @property
    def peers(self) -> list[int]:
        return [p for p in range(self.num_processes) if p != self.process_id]

    # ------------------------------------------------------------------ heartbeats

    def start_heartbeat(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._beat_forever, name="cenas-heartbeat", daemon=True)
        self._thread.start()

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the store is gone (process 0 ended): the waits notice it
                return

    def beat(self) -> None:
        self._beat += 1
        self.client.key_value_set(f"hb/{self.process_id}", str(self._beat), True)

    def close(self) -> None:
        self._stop.set()

    def check_alive(self, pids: Iterable[int]) -> None:
        """Raise ``PeerLost`` when one of ``pids`` has not beaten for ``dead_after_s``."""
        now = time.monotonic()
        for p in pids:
            value = self._try_get_raw(f"hb/{p}")
            last, since = self._seen.get(p, (None, now))
            if value != last:
                self._seen[p] = (value, now)
            elif now - since > self.dead_after_s:
                raise PeerLost(f"process {p} of {self.num_processes} stopped answering (no heartbeat for "
                               f"{now - since:.0f} s)")

    # ------------------------------------------------------------------ values

    def _try_get_raw(self, key: str) -> str | None:
        try:
            return self.client.key_value_try_get(key)
        except Exception as e:  # noqa: BLE001 - NOT_FOUND is how the store says "not yet"
            if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
                return None
            raise self._lost_store(e) from None

    def _lost_store(self, e: BaseException) -> PeerLost:
        return PeerLost(f"the coordination service (process 0) stopped answering: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}")

    def put(self, key: str, value: Any) -> None:
        """Post ``value`` (JSON) under ``key``; large values go in parts."""
        text = json.dumps(value, separators=(",", ":"))
        try:
            if len(text) <= PART_BYTES:
                self.client.key_value_set(key, "v" + text, True)
                return
            parts = [text[i:i + PART_BYTES] for i in range(0, len(text), PART_BYTES)]
            for i, part in enumerate(parts):
                self.client.key_value_set(f"{key}/part{i}", part, True)
            self.client.key_value_set(key, f"p{len(parts)}", True)
        except Exception as e:  # noqa: BLE001
            raise self._lost_store(e) from None

    def try_get(self, key: str) -> Any | None:
        """The value under ``key``, or None when nothing is posted there yet."""
        head = self._try_get_raw(key)
        if head is None:
            return None
        if head.startswith("v"):
            return json.loads(head[1:])
        if head.startswith("p") and head[1:].isdigit():
            text = ""
            for i in range(int(head[1:])):
                part = self._try_get_raw(f"{key}/part{i}")
                if part is None:
                    raise RuntimeError(f"{key}: part {i} of a posted value is missing")
                text += part
            return json.loads(text)
        raise RuntimeError(f"{key}: not a value posted by a cenas process ({head[:40]!r})")

    def wait(self, key: str, watch: Iterable[int] | None = None, poll_s: float = 0.2) -> Any:
        """Block until ``key`` is posted; ``PeerLost`` when a process in ``watch`` (default: all others) is
        lost meanwhile."""
        watch = list(self.peers if watch is None else watch)
        while True:
            value = self.try_get(key)
            if value is not None:
                return value
            self.check_alive(watch)
            time.sleep(poll_s)

    def delete(self, keys: Iterable[str]) -> None:
        for k in keys:
            try:
                self.client.key_value_delete(k)
            except Exception:  # noqa: BLE001 - tidying only
                pass


class MemoryStore:
    """An in-process stand-in for the coordination service's key-value store (tests of the callers' logic;
    the real store is exercised by the multi-process tests)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        with self.lock:
            if key in self.data and not allow_overwrite:
                raise RuntimeError(f"ALREADY_EXISTS: {key}")
            self.data[key] = value

    def key_value_try_get(self, key: str) -> str:
        with self.lock:
            if key not in self.data:
                raise RuntimeError(f"NOT_FOUND: {key}")
            return self.data[key]

    def key_value_delete(self, key: str) -> None:
        with self.lock:
            for k in [k for k in self.data if k == key or k.startswith(key + "/")]:
                del self.data[k]
