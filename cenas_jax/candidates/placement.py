"""Where each sandbox worker runs: the host's accelerators, found without starting JAX, and one plan per slot.

The parent never initialises an accelerator backend for the pool's sake: it reads the inventory from the
device nodes and the environment, and gives each worker the environment that pins it to its device.

* CPU: every worker is a single-threaded process (DESIGN.md §3); nothing device-specific.
* GPU: ``CUDA_VISIBLE_DEVICES`` names one device per worker; ``sandbox.workers_per_device`` workers share
  it, or each worker owns ``sandbox.devices_per_worker`` devices (its vmapped seeds split over them). XLA's allocator does not preallocate (``XLA_PYTHON_CLIENT_PREALLOCATE=false``) and is capped at
  ``XLA_PYTHON_CLIENT_MEM_FRACTION`` of the device: ``sandbox.device_memory_fraction`` (default 0.75, the
  rest for the search process's LLM) split evenly among the workers of one device. No RLIMIT_AS: the CUDA
  driver maps far more address space than it uses. The device nodes stay reachable inside the worker's
  mount namespace (only ``/tmp`` and ``/dev/shm`` are replaced there).
* TPU: where the chips are enumerable (``/dev/accel*`` or ``/dev/vfio/<n>``), one worker per chip, each
  started as a non-communicating single-chip process (``TPU_CHIPS_PER_PROCESS_BOUNDS=1,1,1``,
  ``TPU_PROCESS_BOUNDS=1,1,1``, its chip in ``TPU_VISIBLE_CHIPS`` / ``TPU_VISIBLE_DEVICES``, its own mesh
  controller port). Otherwise, or with ``sandbox.tpu_worker_per_chip: false``, one worker owns every chip
  and splits its vmapped seeds over them (``train.exported``: one copy of the programs per chip).

``plan_workers`` is pure (an inventory and a config in, plans out), so every case is tested on a CPU host
with a faked inventory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Iterable, Mapping

from cenas_jax.config import SandboxConfig

# What a worker on an accelerator keeps of the caller's environment: where the driver libraries are
# (CUDA's or libtpu's), and the runtime's own settings. Nothing else of the caller's reaches a worker.
PASS_THROUGH = {
    "gpu": ("LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "NVIDIA_DRIVER_CAPABILITIES", "XLA_FLAGS"),
    "tpu": ("LD_LIBRARY_PATH", "TPU_LIBRARY_PATH", "LIBTPU_INIT_ARGS", "TPU_ACCELERATOR_TYPE", "XLA_FLAGS"),
    "cpu": (),
}
TPU_MESH_PORT_BASE = 8476  # libtpu's default mesh controller port; worker i uses BASE + 1 + i
DEFAULT_DEVICE_MEMORY_FRACTION = 0.75
CPU_CORES_ENV = "CENAS_CPU_CORES"  # a CPU worker's own cores ("0" or "2,3"), read by worker.py at start


@dataclasses.dataclass(frozen=True)
class Inventory:
    """The host's compute as the pool sees it: ``platform`` ("cpu", "gpu" or "tpu"), the accelerator ids a
    worker may be pinned to (GPU indices or UUIDs as ``CUDA_VISIBLE_DEVICES`` gives them, TPU chip
    indices; empty on CPU or when the chips cannot be enumerated), and the usable CPU cores."""

    platform: str
    devices: tuple[str, ...]
    cores: int

    def describe(self) -> str:
        if self.platform == "cpu":
            return f"cpu ({self.cores} cores)"
        ids = ",".join(self.devices) if self.devices else "not enumerable"
        return f"{self.platform}: {len(self.devices) or '?'} device(s) [{ids}], {self.cores} cores"


@dataclasses.dataclass(frozen=True)
class WorkerPlacement:
    """One pool slot: the devices its worker sees, what its environment adds, and whether RLIMIT_AS applies."""

    slot: int
    devices: tuple[str, ...]
    env: Mapping[str, str]
    address_space_limit: bool


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _numbered(names: list[str], prefix: str) -> list[str]:
    return sorted((n[len(prefix):] for n in names if re.fullmatch(re.escape(prefix) + r"\d+", n)), key=int)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _has_module(*names: str) -> bool:
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def detect_inventory(environ: Mapping[str, str] | None = None, dev_dir: str = "/dev",
                     cuda_plugin: bool | None = None, tpu_runtime: bool | None = None,
                     cores: int | None = None) -> Inventory:
    """The inventory from ``JAX_PLATFORMS``, the device nodes under ``dev_dir`` and the installed plugins.

    ``JAX_PLATFORMS`` decides when set (``cpu``; ``cuda``/``gpu``/``rocm``; ``tpu``). Else a GPU host is one
    with ``/dev/nvidia<N>`` nodes and JAX's CUDA plugin installed, a TPU host one with ``/dev/accel<N>`` or
    ``/dev/vfio/<N>`` nodes and libtpu installed. A set ``CUDA_VISIBLE_DEVICES`` (or ``TPU_VISIBLE_CHIPS``)
    restricts the devices to those it names. The keyword arguments stand in for the host in tests.
    """
    env = os.environ if environ is None else environ
    cores = _cores() if cores is None else cores
    entries = _listdir(dev_dir)
    gpus = _numbered(entries, "nvidia")
    chips = _numbered(entries, "accel") or _numbered(_listdir(os.path.join(dev_dir, "vfio")), "")
    forced = env.get("JAX_PLATFORMS", "").strip().lower().split(",")[0]
    if forced:
        platform = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu"}.get(forced, "cpu")
    else:
        if cuda_plugin is None:
            cuda_plugin = _has_module("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda12",
                                      "jax_plugins.xla_cuda13")
        if tpu_runtime is None:
            tpu_runtime = _has_module("libtpu")
        platform = "gpu" if gpus and cuda_plugin else "tpu" if chips and tpu_runtime else "cpu"
    if platform == "gpu":
        visible = env.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() not in ("", "all"):
            ids = tuple(v.strip() for v in visible.split(",") if v.strip())
            ids = tuple(ids[: ids.index("-1")] if "-1" in ids else ids)  # CUDA stops at an invalid id
        else:
            ids = tuple(gpus)
        return Inventory("gpu", ids, cores)
    if platform == "tpu":
        visible = env.get("TPU_VISIBLE_CHIPS") or env.get("TPU_VISIBLE_DEVICES")
        ids = tuple(v.strip() for v in visible.split(",") if v.strip()) if visible else tuple(chips)
        return Inventory("tpu", ids, cores)
    return Inventory("cpu", (), cores)


def pool_size(inv: Inventory, cfg: SandboxConfig) -> int:
    """``sandbox.workers`` when set; else one worker per core (CPU, ``threads_per_worker`` threads each),
    ``workers_per_device`` per GPU, one per TPU chip (or one in all where chips are not enumerable or
    ``tpu_worker_per_chip`` is off)."""
    if cfg.workers:
        return cfg.workers
    if inv.platform == "cpu":
        return max(1, inv.cores // max(1, cfg.threads_per_worker))
    if inv.platform == "gpu":
        return max(1, len(inv.devices) // cfg.devices_per_worker) * cfg.workers_per_device
    if inv.devices and cfg.tpu_worker_per_chip:
        return len(inv.devices)  # a chip serves one process at a time: workers_per_device does not apply
    return 1


def default_workers(cfg: SandboxConfig, platform: str | None = None) -> int:
    """Pool size on this host (``pool_size``); ``platform`` overrides the detected one, with the detected
    devices."""
    inv = detect_inventory()
    if platform is not None and platform != inv.platform:
        inv = Inventory(platform, inv.devices if platform != "cpu" else (), inv.cores)
    return pool_size(inv, cfg)


def memory_fraction(cfg: SandboxConfig) -> float:
    """The share of one device's memory each of its workers may take."""
    total = cfg.device_memory_fraction or DEFAULT_DEVICE_MEMORY_FRACTION
    return total / cfg.workers_per_device


def cpu_core_groups(n: int, cfg: SandboxConfig, allowed: Iterable[int] | None = None) -> list[tuple[int, ...]]:
    """Cores of their own for ``n`` CPU workers of ``threads_per_worker`` threads each, or [] (no pinning).

    Pinning applies when ``sandbox.pin_cores`` is on and the pool fits the cores this process may use
    (``allowed``, default its affinity mask); an oversubscribed pool is left to the scheduler. Why: a
    single-threaded XLA:CPU process still runs helper threads that wander onto its neighbour's core, and
    two unpinned workers each ran a ResNet step in 129 ms where two pinned ones took 96 ms (DESIGN.md §3
    "Pool scaling on CPU").
    """
    if not cfg.pin_cores:
        return []
    if allowed is None:
        try:
            allowed = os.sched_getaffinity(0)
        except AttributeError:
            return []
    cores = sorted(allowed)
    t = max(1, cfg.threads_per_worker)
    if n * t > len(cores):
        return []
    return [tuple(cores[i * t : (i + 1) * t]) for i in range(n)]


def plan_workers(inv: Inventory, cfg: SandboxConfig, environ: Mapping[str, str] | None = None) -> list[WorkerPlacement]:
    """One placement per pool slot. Slots go round the devices, so with N devices the first N workers
    take one device each before any device gets a second."""
    env_in = os.environ if environ is None else environ
    n = pool_size(inv, cfg)
    keep = {k: env_in[k] for k in PASS_THROUGH[inv.platform] if k in env_in}
    plans = []
    cpu_groups = cpu_core_groups(n, cfg) if inv.platform == "cpu" else []
    for slot in range(n):
        if inv.platform == "cpu":
            env = {CPU_CORES_ENV: ",".join(map(str, cpu_groups[slot]))} if cpu_groups else {}
            plans.append(WorkerPlacement(slot, (), env, True))
            continue
        env = dict(keep)
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{memory_fraction(cfg):.4f}"
        if inv.platform == "gpu":
            env["JAX_PLATFORMS"] = "cuda"
            k = min(cfg.devices_per_worker, len(inv.devices)) or 1
            groups = [inv.devices[i : i + k] for i in range(0, len(inv.devices) - k + 1, k)]
            devices = tuple(groups[slot % len(groups)]) if groups else ()
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        else:
            env["JAX_PLATFORMS"] = "tpu"
            if inv.devices and cfg.tpu_worker_per_chip:
                chip = inv.devices[slot % len(inv.devices)]
                devices = (chip,)
                port = TPU_MESH_PORT_BASE + 1 + slot
                env.update({
                    "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
                    "TPU_PROCESS_BOUNDS": "1,1,1",
                    "TPU_VISIBLE_CHIPS": chip,
                    "TPU_VISIBLE_DEVICES": chip,
                    "TPU_PROCESS_PORT": str(port),
                    "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{port}",
                    "TPU_MESH_CONTROLLER_PORT": str(port),
                })
            else:
                devices = inv.devices
        plans.append(WorkerPlacement(slot, devices, env, False))
    return plans
