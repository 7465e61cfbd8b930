"""Proxy trainer: learning, determinism, strategies agree, NaN, FLOPs, compile-once, test split."""

from __future__ import annotations

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen.pooling import min_pool

from cenas_jax.config import DataConfig, TrainConfig
from cenas_jax.data import load_dataset
from cenas_jax.train import (
    Strategy,
    TrainError,
    choose_strategy,
    disable_compile_cache,
    enable_compile_cache,
    evaluate_accuracy,
    train_candidate,
)
from cenas_jax.train.depthwise import fast_depthwise
from cenas_jax.train.device_data import eval_arrays
from cenas_jax.train.pooling import fast_pooling, window_pool
from cenas_jax.train.proxy import _schedule

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class MLP(nn.Module):
    num_classes: int = 10
    width: int = 64

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x)


class SmallCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class NaNNet(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        logits = nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
        return logits * jnp.inf  # inf - inf in the softmax: NaN loss from the first step


class WrongWidth(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(7)(x.reshape(x.shape[0], -1))


ADAM = TrainConfig(epochs=2, optimizer="adam", learning_rate=3e-3, compile_cache=False)
SGD = TrainConfig(epochs=2, optimizer="sgd", learning_rate=0.05, momentum=0.9, compile_cache=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits", seed=0))


@contextlib.contextmanager
def count_compiles():
    """Count XLA backend compiles (cache hits included) inside the block."""
    names: list[str] = []

    def listener(event, duration, **kw):
        if event == BACKEND_COMPILE:
            names.append(str(kw.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_mlp_learns_digits_with_adam(digits):
    r = train_candidate(MLP(), False, digits, ADAM, jax.random.key(0))
    assert r.accuracy > 0.8, r
    assert r.strategy == "scan/sequential"  # no convolution on CPU: scanned epochs
    assert r.params == 64 * 64 + 64 + 64 * 10 + 10
    assert np.isfinite(r.loss) and r.loss < 1.0
    assert r.compile_s > 0 and r.train_s > 0


def test_cnn_with_batchnorm_dropout_learns_with_sgd(digits):
    r = train_candidate(SmallCNN(), True, digits, SGD, jax.random.key(0))
    assert r.accuracy > 0.6, r
    assert r.strategy == "loop/sequential"  # convolutions on CPU: python loop of jitted steps
    # 3x3x1x16 conv + bias, BatchNorm scale/bias, dense 4*4*16 -> 10
    assert r.params == 3 * 3 * 16 + 16 + 2 * 16 + 4 * 4 * 16 * 10 + 10


def test_same_key_same_result_other_key_other_result(digits):
    cfg = dataclasses.replace(SGD, epochs=1, seeds=2)
    a = train_candidate(SmallCNN(), True, digits, cfg, jax.random.key(7), return_variables=True)
    b = train_candidate(SmallCNN(), True, digits, cfg, jax.random.key(7))
    c = train_candidate(SmallCNN(), True, digits, cfg, jax.random.key(8))
    assert a.seed_accuracies == b.seed_accuracies and a.loss == b.loss
    assert len(a.seed_accuracies) == 2
    # The two seeds (fold_in(key, s)) are two runs: every trained weight array differs between them
    # (their accuracies alone could tie by chance).
    seed0, seed1 = (jax.tree.leaves(v["params"]) for v in a.variables)
    assert len(seed0) == len(seed1) > 0
    assert all(not np.array_equal(w0, w1) for w0, w1 in zip(seed0, seed1))
    # and another key gives other runs
    assert a.loss != c.loss


def test_loop_and_scan_agree_without_dropout(digits):
    cfg = dataclasses.replace(ADAM, epochs=1.5)
    loop = train_candidate(MLP(), False, digits, dataclasses.replace(cfg, epoch_strategy="loop"), jax.random.key(3))
    scan = train_candidate(MLP(), False, digits, dataclasses.replace(cfg, epoch_strategy="scan"), jax.random.key(3))
    assert loop.strategy.startswith("loop") and scan.strategy.startswith("scan")
    assert loop.steps == scan.steps == int(1.5 * (len(digits.y_train) // 64))
    np.testing.assert_allclose(loop.loss, scan.loss, rtol=1e-4)
    n_val = len(digits.y_val)
    assert abs(loop.accuracy - scan.accuracy) <= 1.5 / n_val


def test_vmap_and_sequential_seeds_agree(digits):
    cfg = dataclasses.replace(ADAM, epochs=1, seeds=3)
    seq = train_candidate(MLP(width=32), False, digits, dataclasses.replace(cfg, seed_strategy="sequential"), jax.random.key(5))
    vm = train_candidate(MLP(width=32), False, digits, dataclasses.replace(cfg, seed_strategy="vmap"), jax.random.key(5))
    assert seq.strategy.endswith("/sequential") and vm.strategy.endswith("/vmap")
    n_val = len(digits.y_val)
    np.testing.assert_allclose(seq.seed_accuracies, vm.seed_accuracies, atol=1.5 / n_val)
    np.testing.assert_allclose(seq.loss, vm.loss, rtol=1e-4)
    np.testing.assert_allclose(seq.flops, vm.flops, rtol=0.05)


def test_nan_loss_raises_train_error(digits):
    with pytest.raises(TrainError) as e:
        train_candidate(NaNNet(), False, digits, ADAM, jax.random.key(0))
    assert e.value.kind == "nan" and "NaN" in e.value.message


def test_wrong_logit_width_is_a_shape_error(digits):
    with pytest.raises(TrainError) as e:
        train_candidate(WrongWidth(), False, digits, ADAM, jax.random.key(0))
    assert e.value.kind == "shape"
    assert "expected" in e.value.message and ", 10)" in e.value.message and ", 7)" in e.value.message


def test_untraceable_model_is_a_compile_error(digits):
    class Broken(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x.reshape(x.shape[0], 7, -1))  # 64 pixels do not split by 7

    with pytest.raises(TrainError) as e:
        train_candidate(Broken(), False, digits, ADAM, jax.random.key(0))
    assert e.value.kind == "compile"


def test_flops_positive_and_scale_with_width(digits):
    cfg = dataclasses.replace(ADAM, epochs=0.2)
    small = train_candidate(MLP(width=32), False, digits, cfg, jax.random.key(0))
    big = train_candidate(MLP(width=256), False, digits, cfg, jax.random.key(0))
    assert small.flops > 0
    # the two matmuls dominate: 2*(64*w + w*10) per example
    assert 2 * (64 * 32 + 32 * 10) <= small.flops < 2 * 2 * (64 * 32 + 32 * 10)
    assert 6.0 < big.flops / small.flops < 8.5


class CountedCNN(SmallCNN):
    """A class of its own, so that no earlier test has compiled it."""


def test_each_program_compiles_once_per_model_and_shapes(digits):
    # shared helpers (permutation, key folding) compile on first use in the process
    train_candidate(MLP(width=8), False, digits, dataclasses.replace(SGD, epochs=0.1), jax.random.key(0))
    with count_compiles() as first:
        r1 = train_candidate(CountedCNN(), True, digits, dataclasses.replace(SGD, epochs=1), jax.random.key(1))
    # init, eval batch and train step: one compile each
    assert len(first) == 3, first
    with count_compiles() as again:
        r2 = train_candidate(CountedCNN(), True, digits, dataclasses.replace(SGD, epochs=2), jax.random.key(2))
    assert again == []  # same module and shapes: the compiled programs are reused, whatever the epochs
    assert r2.compile_s < r1.compile_s and r2.steps == 2 * r1.steps
    # the scan strategy compiles one epoch program per distinct epoch length (here a whole and a half)
    with count_compiles() as scan_partial:
        train_candidate(MLP(width=24), False, digits, dataclasses.replace(SGD, epochs=1.5, epoch_strategy="scan"), jax.random.key(3))
    assert len(scan_partial) == 4, scan_partial


def test_test_split_evaluation_and_returned_variables(digits):
    r = train_candidate(MLP(), False, digits, ADAM, jax.random.key(0), eval_split="test", return_variables=True)
    assert r.eval_split == "test" and r.accuracy > 0.8
    assert r.variables is not None and len(r.variables) == 1
    again = evaluate_accuracy(MLP(), False, r.variables[0], digits, split="test")
    assert again == pytest.approx(r.accuracy, abs=1e-9)
    # padded, masked batches: a batch size that leaves padding gives the same accuracy
    padded = eval_arrays(digits, "test", 80)
    assert padded.num_batches * padded.batch_size > padded.count == len(digits.y_test)
    assert evaluate_accuracy(MLP(), False, r.variables[0], digits, split="test", eval_batch_size=80) == pytest.approx(again)
    val = evaluate_accuracy(MLP(), False, r.variables[0], digits, split="val")
    assert 0.5 < val <= 1.0


def test_partial_epoch_schedule():
    assert _schedule(0.5, 19) == [(0, 9)]
    assert _schedule(2, 19) == [(0, 19), (1, 19)]
    assert _schedule(1.5, 19) == [(0, 19), (1, 9)]
    assert _schedule(0.001, 19) == [(0, 1)]  # at least one step


def test_strategy_rules():
    auto = TrainConfig()
    assert choose_strategy(auto, "cpu", has_conv=True) == Strategy("loop", "sequential")
    assert choose_strategy(auto, "cpu", has_conv=False) == Strategy("scan", "sequential")
    assert choose_strategy(dataclasses.replace(auto, seeds=4), "gpu", has_conv=True) == Strategy("scan", "vmap")
    forced = TrainConfig(seeds=4, epoch_strategy="loop", seed_strategy="sequential")
    assert choose_strategy(forced, "tpu", has_conv=True) == Strategy("loop", "sequential")
    assert choose_strategy(TrainConfig(seed_strategy="vmap"), "cpu", has_conv=True).seed == "vmap"


def test_compile_cache_writes_entries_in_the_given_dir(tmp_path, digits):
    cache = tmp_path / "xla"
    try:
        cfg = dataclasses.replace(ADAM, epochs=0.2, compile_cache=True, compile_cache_dir=str(cache))
        train_candidate(MLP(width=48), False, digits, cfg, jax.random.key(0))
        assert cache.is_dir() and any(cache.iterdir())
        assert enable_compile_cache(dataclasses.replace(cfg, compile_cache=False)) is None
    finally:
        disable_compile_cache()


@pytest.mark.parametrize(
    "pool_fn, window, strides, padding, hw",
    [
        (nn.max_pool, (2, 2), (2, 2), "VALID", (8, 8)),
        (nn.max_pool, (2, 2), (2, 2), "VALID", (7, 9)),  # remainder rows/cols dropped
        (nn.max_pool, (3, 3), (3, 3), "SAME", (9, 6)),
        (nn.avg_pool, (2, 2), (2, 2), ((0, 0), (0, 0)), (6, 4)),
        (min_pool, (2, 1), (2, 1), "VALID", (4, 4)),
        (nn.max_pool, (3, 3), (2, 2), "SAME", (8, 8)),  # overlapping: Flax's own path
    ],
)
def test_fast_pooling_matches_flax_values_and_gradients(pool_fn, window, strides, padding, hw):
    x = jax.random.normal(jax.random.key(0), (3,) + hw + (5,))  # continuous values: no tied maxima
    w = jax.random.normal(jax.random.key(1), pool_fn(x, window, strides, padding).shape)

    def loss(x):
        return jnp.sum(pool_fn(x, window, strides, padding) * w)

    def value_and_grad(x):
        return pool_fn(x, window, strides, padding), jax.grad(loss)(x)

    # one jit per side: eager mode would compile every primitive on its own
    ref_y, ref_g = jax.jit(value_and_grad)(x)
    with fast_pooling():
        y, g = jax.jit(lambda x: value_and_grad(x))(x)  # a new function: traced inside the block
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(x))
    np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, ref_g, rtol=1e-6, atol=1e-6)
    overlapping = strides != window
    assert ("reduce_window" in jaxpr or "select_and" in jaxpr) == overlapping
    # outside the block Flax is back to its own pooling
    assert "reduce_window" in str(jax.make_jaxpr(lambda x: pool_fn(x, window, strides, padding))(x))


def test_window_pool_falls_back_without_batch_dim():
    x = jnp.arange(16.0).reshape(4, 4, 1)  # (H, W, C): Flax allows an unbatched input
    np.testing.assert_allclose(window_pool(x, -jnp.inf, jax.lax.max, (2, 2), (2, 2), "VALID")[..., 0], [[5, 7], [13, 15]])


@pytest.mark.parametrize(
    "channels, multiplier, kernel, stride, padding",
    [
        (16, 1, 3, 2, ((1, 1), (1, 1))),
        (8, 2, 3, 1, "SAME"),  # channel multiplier 2
        (5, 1, 5, 1, "VALID"),
        (4, 1, 3, 2, "SAME"),  # asymmetric SAME padding at stride 2
    ],
)
def test_fast_depthwise_matches_flax_conv(channels, multiplier, kernel, stride, padding):
    conv = nn.Conv(channels * multiplier, (kernel, kernel), strides=stride, padding=padding, feature_group_count=channels)
    x = jax.random.normal(jax.random.key(0), (2, 11, 12, channels))
    v = jax.jit(conv.init)(jax.random.key(1), x)

    def loss(v, x):
        return jnp.sum(conv.apply(v, x) ** 2)

    def value_and_grad(v, x):
        return conv.apply(v, x), jax.grad(loss, argnums=(0, 1))(v, x)

    ref_y, ref_g = jax.jit(value_and_grad)(v, x)
    with fast_depthwise():
        y, g = jax.jit(lambda v, x: value_and_grad(v, x))(v, x)
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(v, x))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert "conv_general_dilated" not in jaxpr
    assert "conv_general_dilated" in str(jax.make_jaxpr(conv.apply)(v, x))  # restored on exit


def test_fast_depthwise_leaves_ordinary_and_grouped_convs_alone():
    x = jnp.ones((1, 6, 6, 8))
    for conv in (nn.Conv(8, (3, 3)), nn.Conv(8, (3, 3), feature_group_count=2)):
        v = jax.eval_shape(conv.init, jax.random.key(0), x)  # shapes suffice for a jaxpr
        with fast_depthwise():
            assert "conv_general_dilated" in str(jax.make_jaxpr(conv.apply)(v, x))


def test_reentrant_patch_nests_and_restores_on_error():
    import types

    from cenas_jax.train.patching import ReentrantPatch

    mod = types.SimpleNamespace(f="orig")
    patch = ReentrantPatch(mod, "f", "new")
    with patch():
        with patch():
            assert mod.f == "new"
        assert mod.f == "new"  # the outer holder is still inside
    assert mod.f == "orig"
    with pytest.raises(RuntimeError):
        with patch():
            raise RuntimeError("boom")
    assert mod.f == "orig"
    with patch(enabled=False):
        assert mod.f == "orig"
