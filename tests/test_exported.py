"""The tracer/trainer split of proxy training (train/exported.py): the same numbers as the in-process trainer,
and every malformed or hostile export refused with its own error kind before anything runs."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from cenas_jax.candidates import contract
from cenas_jax.config import DataConfig, TrainConfig
from cenas_jax.data import load_dataset
from cenas_jax.train import TrainError, exported, train_candidate

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
