"""The tracer/trainer split of proxy training (train/exported.py): the same numbers as the in-process trainer,
and every malformed or hostile export refused with its own error kind before anything runs."""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import pytest

from cenas_jax.candidates import contract
from cenas_jax.config import DataConfig, TrainConfig
from cenas_jax.data import load_dataset
from cenas_jax.train import TrainError, exported, proxy, train_candidate

MLP = """
import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
"""

CONV_BN = """
import flax.linen as nn
import jax.numpy as jnp


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
"""


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


def _export(source, ds, cfg):
    built = contract.build_net(source, 10)
    shapes = exported.Shapes.for_dataset(ds, cfg)
    meta, blobs = exported.export_programs(built.module, built.takes_train, shapes, cfg, "cpu")
    return built, shapes, meta, blobs


@pytest.mark.parametrize("source", [MLP, CONV_BN], ids=["mlp-scan", "conv-bn-loop"])
@pytest.mark.parametrize("seed_strategy", ["sequential", "vmap"])
def test_exported_training_gives_the_in_process_numbers(digits, source, seed_strategy):
    cfg = TrainConfig(epochs=2, seeds=2, seed_strategy=seed_strategy)
    built, shapes, meta, blobs = _export(source, digits, cfg)
    assert meta["vmapped"] is (seed_strategy == "vmap")
    progs = exported.load_programs(meta, blobs, shapes, "cpu")
    key = jax.random.PRNGKey(7)
    got = exported.train_exported(progs, digits, cfg, key)
    want = train_candidate(built.module, built.takes_train, digits, cfg, key)
    assert got.seed_accuracies == pytest.approx(want.seed_accuracies, abs=1e-12)
    assert got.loss == pytest.approx(want.loss, rel=1e-5)
    assert (got.params, got.strategy, got.steps) == (want.params, want.strategy, want.steps)
    assert got.flops == pytest.approx(want.flops, rel=1e-6)
    assert 0.5 < got.accuracy <= 1.0 or source is CONV_BN  # the MLP learns digits in two epochs


def test_malformed_exports_are_refused(digits):
    cfg = TrainConfig(epochs=1)
    _, shapes, meta, blobs = _export(MLP, digits, cfg)

    def refused(meta_, blobs_, shapes_=shapes, kind="export"):
        with pytest.raises(TrainError) as e:
            exported.load_programs(meta_, blobs_, shapes_, "cpu")
        assert e.value.kind == kind, e.value
        return e.value.message

    assert "deserialised" in refused(meta, dict(blobs, forward=b"\x00garbage" * 10))
    assert "incomplete" in refused(meta, {k: v for k, v in blobs.items() if k != "init"})
    refused(meta, dict(blobs, forward=blobs["init"], init=blobs["forward"]))  # programs swapped
    refused(dict(meta, n_params=meta["n_params"] - 1), blobs)  # params hidden among the mutable state
    refused(dict(meta, vmapped=True), blobs)  # a seed axis the programs do not have
    refused(dict(meta, n_params="2"), blobs)
    # programs for another dataset's shapes: the batch differs (export), the class count is the model's (shape)
    refused(meta, blobs, dataclasses.replace(shapes, batch=shapes.batch // 2))
    refused(meta, blobs, dataclasses.replace(shapes, num_classes=7), kind="shape")
    progs = exported.load_programs(meta, blobs, shapes, "cpu")
    with pytest.raises(TrainError) as e:
        exported.train_exported(progs, digits, cfg, jax.random.PRNGKey(0), max_params=progs.params - 1)
    assert e.value.kind == "budget"


def test_programs_for_another_platform_are_refused(digits):
    cfg = TrainConfig(epochs=1)
    built = contract.build_net(MLP, 10)
    shapes = exported.Shapes.for_dataset(digits, cfg)
    meta, blobs = exported.export_programs(built.module, built.takes_train, shapes, cfg, "cuda")
    with pytest.raises(TrainError) as e:
        exported.load_programs(meta, blobs, shapes, "cpu")
    assert e.value.kind == "export" and "cuda" in e.value.message


def test_host_callbacks_and_unknown_custom_calls_are_refused(digits):
    source = MLP.replace("import flax.linen as nn", "import flax.linen as nn\nimport jax").replace(
        "return nn.Dense(self.num_classes)(x)",
        "x = jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape, x.dtype), x)\n"
        "        return nn.Dense(self.num_classes)(x)",
    )
    with pytest.raises(TrainError) as e:
        _export(source, digits, TrainConfig(epochs=1))
    assert e.value.kind == "export"

    class Fake:
        def __init__(self, text):
            self.text = text

        def mlir_module(self):
            return self.text

    assert exported.refused_custom_calls(Fake('%0 = stablehlo.custom_call @Sharding(%a)')) == []
    assert exported.refused_custom_calls(Fake('stablehlo.custom_call @xla_python_cpu_callback(%a)')) == [
        "xla_python_cpu_callback"
    ]
    assert exported.refused_custom_calls(Fake('"stablehlo.custom_call"(%a) {call_target_name = "evil"}')) == ["evil"]


@contextlib.contextmanager
def _count_compiles():
    """The function names of the XLA backend compiles inside the block."""
    names: list[str] = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kw.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("source", [CONV_BN, MLP], ids=["conv-loop", "mlp-scan"])
def test_every_seed_runs_the_same_compiled_programs(digits, source):
    # the sequential-seed path: one compile of init, eval and the step (or epoch) for all seeds
    warm = TrainConfig(epochs=1, seeds=1)
    _, shapes, meta, blobs = _export(source, digits, warm)
    exported.train_exported(exported.load_programs(meta, blobs, shapes, "cpu"), digits, warm, jax.random.PRNGKey(0))
    counts = {}
    for seeds in (1, 3):
        cfg = TrainConfig(epochs=1, seeds=seeds, seed_strategy="sequential")
        _, shapes, meta, blobs = _export(source, digits, cfg)
        progs = exported.load_programs(meta, blobs, shapes, "cpu")
        with _count_compiles() as names:
            r = exported.train_exported(progs, digits, cfg, jax.random.PRNGKey(1))
        assert len(r.seed_accuracies) == seeds and r.strategy.endswith("/sequential")
        counts[seeds] = names
    assert len(counts[3]) == len(counts[1]) == 3, counts  # init, eval batch, train step or epoch: once each


def test_the_step_compiles_for_few_steps_without_the_fusion_emitters(digits, monkeypatch):
    assert proxy.step_options(proxy.FEW_STEPS) == {"xla_cpu_use_fusion_emitters": False}
    assert proxy.step_options(proxy.FEW_STEPS + 1) is None
    # the count is every step of every sequential seed (digits: 19 steps an epoch), once for vmapped seeds
    assert proxy.train_steps_per_process([(0, 19), (1, 19)], 3, vmapped=False) == 114
    assert proxy.train_steps_per_process([(0, 19), (1, 19)], 3, vmapped=True) == 38
    asked = []
    monkeypatch.setattr(exported, "step_options", lambda n: asked.append(n) or proxy.step_options(n))
    for epochs, seeds in ((2, 3), (4, 2)):
        cfg = TrainConfig(epochs=epochs, seeds=seeds, seed_strategy="sequential")
        _, shapes, meta, blobs = _export(CONV_BN, digits, cfg)
        exported.train_exported(exported.load_programs(meta, blobs, shapes, "cpu"), digits, cfg, jax.random.PRNGKey(0))
    steps_per_epoch = len(digits.y_train) // 64
    assert asked == [2 * steps_per_epoch * 3, 4 * steps_per_epoch * 2]


def test_seed_shards_are_the_largest_divisor_that_fits():
    assert [exported.seed_shards(s, 2) for s in (1, 2, 3, 4, 6)] == [1, 2, 1, 2, 2]
    assert [exported.seed_shards(s, 8) for s in (3, 5, 8, 12)] == [3, 5, 8, 6]
    assert exported.seed_shards(4, 1) == 1
    with pytest.raises(ValueError, match="seed_shards"):
        exported.Shapes((8, 8, 1), 4, 4, 10, 3, seed_shards=2)


SHARDED_SEEDS = r"""
import json, sys
import jax
from cenas_jax.candidates import contract
from cenas_jax.config import DataConfig, TrainConfig
from cenas_jax.data import load_dataset
from cenas_jax.train import exported, proxy, train_candidate

assert len(jax.local_devices()) == 2, jax.local_devices()
compiled = []
real = proxy._Compiler.__call__
def record(self, fn, *args, **kw):
    c = real(self, fn, *args, **kw)
    compiled.append(c)
    return c
exported._Compiler.__call__ = record

source = {"mlp": sys.argv[1] == "mlp"}
ds = load_dataset(DataConfig(name="digits"))
built = contract.build_net(sys.argv[2], 10)
cfg = TrainConfig(epochs=1, seeds=4, seed_strategy="vmap")
key = jax.random.PRNGKey(7)
out = {}
for devices in (2, 1):
    shapes = exported.Shapes.for_dataset(ds, cfg, devices=devices)
    meta, blobs = exported.export_programs(built.module, built.takes_train, shapes, cfg, "cpu")
    progs = exported.load_programs(meta, blobs, shapes, "cpu")
    compiled.clear()
    res = exported.train_exported(progs, ds, cfg, key)
    meshes = sorted({len(s.device_set) for c in compiled for s in jax.tree.leaves(c.input_shardings)})
    out[devices] = {"shards": shapes.seed_shards, "program_seeds": [int(a.shape[0]) for a in progs.init.in_avals],
                    "accs": list(res.seed_accuracies), "loss": res.loss, "flops": res.flops, "params": res.params,
                    "meshes": meshes, "collectives": sorted({op for c in compiled for op in
                        ("all-gather", "all-reduce", "all-to-all", "collective-permute") if op in c.as_text()})}
want = train_candidate(built.module, built.takes_train, ds, cfg, key)
out["default_shards"] = exported.Shapes.for_dataset(ds, cfg).seed_shards  # what a worker asks for
out["in_process"] = {"accs": list(want.seed_accuracies), "loss": want.loss, "flops": want.flops}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("source", [MLP, CONV_BN], ids=["mlp-scan", "conv-bn-loop"])
def test_vmapped_seeds_are_split_over_the_workers_devices(source, tmp_path):
    """A trainer that sees two devices (forced host devices) runs half the seeds on each: programs exported
    for 2 of the 4 seeds, every compiled program on a 2-device mesh, and the numbers of one device."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SEEDS)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), "mlp" if source is MLP else "conv", source],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    split, one, ref = out["2"], out["1"], out["in_process"]
    assert (split["shards"], one["shards"], out["default_shards"]) == (2, 1, 2)
    assert split["program_seeds"] == [2] and one["program_seeds"] == [4]
    assert split["meshes"] == [2] and one["meshes"] == [1]
    assert split["collectives"] == []  # seeds never talk to each other: nothing crosses devices
    assert split["accs"] == pytest.approx(one["accs"], abs=1e-12)
    assert split["accs"] == pytest.approx(ref["accs"], abs=1e-12)
    assert split["loss"] == pytest.approx(one["loss"], rel=1e-5)
    # XLA's cost analysis is per device: the split count is one device's times two, which also counts twice
    # what the two devices both do once (normalising the shared evaluation images): about 1% on digits' MLP
    assert split["flops"] == pytest.approx(one["flops"], rel=0.02)
    assert split["params"] == one["params"]
