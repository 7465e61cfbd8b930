"""Where sandbox workers run: inventories faked on this CPU host, and what each worker is started with."""

from __future__ import annotations

import os

import pytest

from cenas_jax.candidates import placement
from cenas_jax.candidates.placement import Inventory, detect_inventory, plan_workers
from cenas_jax.config import ConfigError, SandboxConfig


def _dev(tmp_path, *names):
    d = tmp_path / "dev"
    d.mkdir()
    for n in names:
        p = d / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    return str(d)


def test_detects_gpus_from_device_nodes_and_the_plugin(tmp_path):
    dev = _dev(tmp_path, "nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset")
    inv = detect_inventory({}, dev, cuda_plugin=True, tpu_runtime=False, cores=16)
    assert inv == Inventory("gpu", ("0", "1", "2"), 16)
    # The nodes without JAX's CUDA plugin: JAX would run on the CPU, so the pool does too.
    assert detect_inventory({}, dev, cuda_plugin=False, tpu_runtime=False, cores=16).platform == "cpu"
    # JAX_PLATFORMS decides when set.
    assert detect_inventory({"JAX_PLATFORMS": "cpu"}, dev, cuda_plugin=True, cores=16).platform == "cpu"


def test_cuda_visible_devices_restricts_the_gpus(tmp_path):
    dev = _dev(tmp_path, "nvidia0", "nvidia1", "nvidia2", "nvidia3")
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert detect_inventory(env, dev, cuda_plugin=True, cores=8).devices == ("2", "3")
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,-1,3"}  # CUDA ignores what follows an invalid id
    assert detect_inventory(env, dev, cuda_plugin=True, cores=8).devices == ("GPU-aaaa",)


def test_detects_tpu_chips(tmp_path):
    dev = _dev(tmp_path, "accel0", "accel1", "accel2", "accel3")
    assert detect_inventory({}, dev, cuda_plugin=False, tpu_runtime=True, cores=96) == Inventory(
        "tpu", ("0", "1", "2", "3"), 96)
    dev2 = tmp_path / "v"
    dev2.mkdir()
    (dev2 / "vfio").mkdir()
    for n in ("0", "1", "vfio"):
        (dev2 / "vfio" / n).write_text("")
    assert detect_inventory({}, str(dev2), cuda_plugin=False, tpu_runtime=True, cores=8).devices == ("0", "1")
    assert detect_inventory({"JAX_PLATFORMS": "tpu"}, str(tmp_path / "none"), cores=8) == Inventory("tpu", (), 8)


def test_cpu_workers_are_unchanged():
    inv = Inventory("cpu", (), 4)
    plans = plan_workers(inv, SandboxConfig(pin_cores=False),
                         environ={"LD_LIBRARY_PATH": "/x", "CUDA_VISIBLE_DEVICES": "0"})
    assert [p.slot for p in plans] == [0, 1, 2, 3]
    assert all(p.env == {} and p.devices == () and p.address_space_limit for p in plans)
    assert len(plan_workers(inv, SandboxConfig(threads_per_worker=2))) == 2


def test_cpu_workers_get_cores_of_their_own_when_the_pool_fits():
    groups = placement.cpu_core_groups
    assert groups(2, SandboxConfig(), allowed={0, 1}) == [(0,), (1,)]
    assert groups(2, SandboxConfig(threads_per_worker=2), allowed={7, 3, 5, 1}) == [(1, 3), (5, 7)]
    assert groups(3, SandboxConfig(), allowed={0, 1}) == []  # oversubscribed: left to the scheduler
    assert groups(2, SandboxConfig(pin_cores=False), allowed={0, 1}) == []
    # On this host: one worker per usable core, each pinned to a different one, named in its environment.
    here = sorted(os.sched_getaffinity(0))
    plans = plan_workers(Inventory("cpu", (), len(here)), SandboxConfig())
    assert [p.env[placement.CPU_CORES_ENV] for p in plans] == [str(c) for c in here]


def test_gpu_workers_one_per_device_then_shared():
    inv = Inventory("gpu", ("0", "1"), 16)
    host = {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64", "HOME": "/root", "SECRET_TOKEN": "x"}
    plans = plan_workers(inv, SandboxConfig(), environ=host)
    assert [p.devices for p in plans] == [("0",), ("1",)]
    for p in plans:
        assert p.env["CUDA_VISIBLE_DEVICES"] == p.devices[0]
        assert p.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert float(p.env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.75)
        assert p.env["JAX_PLATFORMS"] == "cuda"
        assert p.env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"  # the driver's libraries stay findable
        assert "HOME" not in p.env and "SECRET_TOKEN" not in p.env
        assert not p.address_space_limit  # no RLIMIT_AS on accelerators
    # Three workers per device: slots go round the devices, each device's memory is split in three.
    plans = plan_workers(inv, SandboxConfig(workers_per_device=3, device_memory_fraction=0.9), environ={})
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1", "0", "1", "0", "1"]
    assert all(float(p.env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.3) for p in plans)
    # An explicit pool size wraps round the devices too.
    plans = plan_workers(inv, SandboxConfig(workers=3), environ={})
    assert [p.devices for p in plans] == [("0",), ("1",), ("0",)]
    # Workers owning several devices (their vmapped seeds split over them); a remainder device stays unused.
    plans = plan_workers(Inventory("gpu", ("0", "1", "2", "3", "4"), 16), SandboxConfig(devices_per_worker=2), environ={})
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0,1", "2,3"]
    assert [p.devices for p in plans] == [("0", "1"), ("2", "3")]
    (one,) = plan_workers(Inventory("gpu", ("0",), 16), SandboxConfig(devices_per_worker=2), environ={})
    assert one.devices == ("0",)


def test_tpu_workers_one_per_chip_or_one_for_all():
    inv = Inventory("tpu", ("0", "1", "2", "3"), 96)
    plans = plan_workers(inv, SandboxConfig(workers_per_device=2), environ={"LIBTPU_INIT_ARGS": "--x"})
    assert len(plans) == 4  # a chip serves one process at a time
    ports = set()
    for p, chip in zip(plans, inv.devices):
        assert p.devices == (chip,)
        assert p.env["TPU_VISIBLE_CHIPS"] == chip and p.env["TPU_VISIBLE_DEVICES"] == chip
        assert p.env["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "1,1,1" and p.env["TPU_PROCESS_BOUNDS"] == "1,1,1"
        assert p.env["LIBTPU_INIT_ARGS"] == "--x" and p.env["JAX_PLATFORMS"] == "tpu"
        ports.add(p.env["TPU_MESH_CONTROLLER_PORT"])
    assert len(ports) == 4  # non-communicating processes, each its own controller port
    (one,) = plan_workers(inv, SandboxConfig(tpu_worker_per_chip=False), environ={})
    assert one.devices == inv.devices and "TPU_VISIBLE_CHIPS" not in one.env
    (one,) = plan_workers(Inventory("tpu", (), 8), SandboxConfig(), environ={})
    assert one.devices == ()


def test_config_checks():
    with pytest.raises(ConfigError, match="workers_per_device"):
        SandboxConfig(workers_per_device=0)
    with pytest.raises(ConfigError, match="devices_per_worker"):
        SandboxConfig(devices_per_worker=2, workers_per_device=2)
    with pytest.raises(ConfigError, match="device_memory_fraction"):
        SandboxConfig(device_memory_fraction=1.5)


def test_evaluator_starts_each_worker_with_its_placement(monkeypatch):
    """The environment a worker process is really started with, for a faked two-GPU inventory: the
    worker spawn is intercepted (no GPU here), everything up to it is the Evaluator's own."""
    from cenas_jax.candidates import evaluator
    from cenas_jax.config import DataConfig, TrainConfig

    started = []

    class FakeWorker:
        def __init__(self, slot, serial, spec, env, log_dir, work_root):
            started.append((slot, dict(env), spec["address_space"]))
            self.state = "starting"
            self.slot = slot

        def kill(self):
            self.state = "dead"

    monkeypatch.setattr(evaluator, "WorkerHandle", FakeWorker)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/cuda/lib")
    inv = Inventory("gpu", ("0", "1"), 8)
    ev = evaluator.Evaluator(DataConfig(name="digits"), TrainConfig(), SandboxConfig(workers_per_device=2),
                             inventory=inv)
    try:
        assert ev.pool_size == 4
        ev._ensure_pool(4)
        assert [s for s, _, _ in started] == [0, 1, 2, 3]
        assert [e["CUDA_VISIBLE_DEVICES"] for _, e, _ in started] == ["0", "1", "0", "1"]
        for _, env, address_space in started:
            assert env["JAX_PLATFORMS"] == "cuda" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
            assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.375)
            assert env["LD_LIBRARY_PATH"] == "/opt/cuda/lib"
            assert "XLA_FLAGS" not in env or "eigen" not in env["XLA_FLAGS"]  # no CPU thread flags
            assert address_space is None
    finally:
        ev.close()
    started.clear()
    ev = evaluator.Evaluator(DataConfig(name="digits"), TrainConfig(), SandboxConfig(workers=2),
                             inventory=Inventory("cpu", (), 2))
    try:
        ev._ensure_pool(2)
        for _, env, address_space in started:
            assert env["JAX_PLATFORMS"] == "cpu" and "CUDA_VISIBLE_DEVICES" not in env
            assert "LD_LIBRARY_PATH" not in env and address_space == 6144 << 20
    finally:
        ev.close()


def test_detected_inventory_on_this_host():
    inv = placement.detect_inventory()
    assert inv.platform in ("cpu", "gpu", "tpu") and inv.cores == len(os.sched_getaffinity(0))


def test_workers_that_cannot_reach_their_device_fail_with_the_reason():
    """A worker pinned to a GPU this host does not have dies at start-up: start() and the isolation probe
    raise SandboxError naming JAX's reason (found on a GPU host, where the probe wrote to a closed pipe and
    start() returned with no worker at all)."""
    from cenas_jax.candidates import evaluator
    from cenas_jax.candidates.errors import SandboxError
    from cenas_jax.config import DataConfig, TrainConfig

    inv = Inventory("gpu", ("0",), 2)
    with evaluator.Evaluator(DataConfig(name="digits"), TrainConfig(), SandboxConfig(workers=1), inventory=inv) as ev:
        with pytest.raises(SandboxError, match="JAX_PLATFORMS=cuda, CUDA_VISIBLE_DEVICES=0"):
            ev.start(wait=True)
        assert ev._start_failures == evaluator._START_FAILURES_BEFORE_GIVING_UP
    with evaluator.Evaluator(DataConfig(name="digits"), TrainConfig(), SandboxConfig(workers=1), inventory=inv) as ev:
        with pytest.raises(SandboxError, match="probe worker failed to start: .*JAX_PLATFORMS=cuda"):
            ev.probe_isolation()
