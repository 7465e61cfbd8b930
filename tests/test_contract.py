"""Candidate contract: build, leniency, shape check, apply with BatchNorm/Dropout, structure hash."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.candidates.contract import (
    apply_net,
    build_net,
    count_params,
    init_net,
    shape_check,
    structure_hash,
)
from cenas_jax.candidates.errors import ALL_KINDS, CandidateError, ErrorKind


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


BN_DROPOUT = src(
    '''
    """Conv + BatchNorm + Dropout."""
    import flax.linen as nn
    import jax.numpy as jnp

    class Net(nn.Module):
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(8, (3, 3), padding="SAME")(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.Dropout(0.5, deterministic=not train)(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(self.num_classes)(x)
    '''
)

NO_TRAIN_FIXED_WIDTH = src(
    """
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x.reshape((x.shape[0], -1))
            x = nn.relu(nn.Dense(16)(x))
            return nn.Dense(10)(x)
    """
)


def expect_error(kind: ErrorKind, fn, *args):
    with pytest.raises(CandidateError) as info:
        fn(*args)
    assert info.value.kind == kind, info.value.message
    return info.value


def test_error_kinds_are_the_fixed_taxonomy():
    assert ALL_KINDS == (
        "syntax", "policy", "build", "shape", "budget", "compile", "export", "nan",
        "timeout", "memory", "crash", "delta_apply", "duplicate",
    )  # fmt: skip
    assert ErrorKind.SHAPE == "shape" and str(ErrorKind.DELTA_APPLY) == "delta_apply"


def test_batchnorm_dropout_net_builds_and_counts_params():
    built = build_net(BN_DROPOUT, 7)
    assert built.takes_train and built.module.num_classes == 7
    params, out_shape = shape_check(built, (8, 8, 1), 7)
    # conv 3*3*1*8 + 8, BatchNorm scale+bias 2*8 (running stats are not params), dense 8*7 + 7
    assert params == 80 + 16 + 63
    assert out_shape == (2, 7)


def test_apply_updates_batch_stats_in_train_and_dropout_uses_its_key():
    built = build_net(BN_DROPOUT, 10)
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 1)) * 3.0 + 1.0
    # One jitted program: a single compile is cheaper than eager op-by-op dispatch.
    @jax.jit
    def run(key):
        variables = init_net(built, key, x)
        eval_out = apply_net(built, variables, x, train=False)
        train_a = apply_net(built, variables, x, train=True, rngs=jax.random.PRNGKey(1))
        train_b = apply_net(built, variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
        return variables, eval_out, train_a, train_b

    variables, (eval_a, upd), (train_a, updates), (train_b, _) = run(jax.random.PRNGKey(0))
    assert set(variables) == {"params", "batch_stats"}
    assert count_params(variables) == 80 + 16 + 8 * 10 + 10
    assert upd == {} and eval_a.shape == (4, 10)
    assert set(updates) == {"batch_stats"}
    old_mean = variables["batch_stats"]["BatchNorm_0"]["mean"]
    new_mean = updates["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(old_mean, new_mean)  # running statistics moved
    assert not np.allclose(train_a, train_b)  # different dropout masks
    assert not np.allclose(train_a, eval_a)


def test_lenient_no_train_argument_and_no_num_classes_field():
    built = build_net(NO_TRAIN_FIXED_WIDTH, 10)
    assert not built.takes_train
    params, out = shape_check(built, (8, 8, 1), 10)
    assert params == 64 * 16 + 16 + 16 * 10 + 10 and out == (2, 10)
    x = jnp.ones((3, 8, 8, 1))
    variables = jax.jit(lambda k: init_net(built, k, x))(jax.random.PRNGKey(0))
    logits, updates = jax.jit(lambda v: apply_net(built, v, x, train=True))(variables)
    assert logits.shape == (3, 10) and updates == {}
    # the width is fixed at 10: a 5-class dataset is a shape error naming both widths
    err = expect_error(ErrorKind.SHAPE, shape_check, build_net(NO_TRAIN_FIXED_WIDTH, 5), (8, 8, 1), 5)
    assert "expected (2, 5)" in err.message and "got (2, 10)" in err.message


@pytest.mark.parametrize(
    "signature, flag",
    [("x, training: bool = False", "not training"), ("x, deterministic: bool = True", "deterministic")],
)
def test_lenient_other_spellings_of_the_train_flag(signature, flag):
    source = src(
        f"""
        import flax.linen as nn

        class Net(nn.Module):
            @nn.compact
            def __call__(self, {signature}):
                x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
                x = nn.Dropout(0.9, deterministic={flag})(x)
                return nn.Dense(10)(x)
        """
    )
    built = build_net(source, 10)
    assert built.takes_train
    assert shape_check(built, (4, 4, 1), 10) == (16 * 16 + 16 + 16 * 10 + 10, (2, 10))
    x = jnp.ones((2, 4, 4, 1))
    variables = init_net(built, jax.random.PRNGKey(0), x)
    eval_out, _ = apply_net(built, variables, x, train=False)
    eval_again, _ = apply_net(built, variables, x, train=False)
    train_out, _ = apply_net(built, variables, x, train=True, rngs=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(eval_out, eval_again)  # eval mode: dropout off
    assert not np.allclose(eval_out, train_out)  # train mode: dropout at 0.9 changes the output


def test_lenient_net_as_a_module_instance():
    source = "import flax.linen as nn\nNet = nn.Sequential([lambda x: x.reshape((x.shape[0], -1)), nn.Dense(10)])\n"
    built = build_net(source, 10)
    assert not built.takes_train
    assert shape_check(built, (8, 8, 1), 10) == (64 * 10 + 10, (2, 10))


def test_wrong_output_shape_is_a_shape_error():
    source = BN_DROPOUT.replace("jnp.mean(x, axis=(1, 2))", "x")  # logits keep the spatial axes
    err = expect_error(ErrorKind.SHAPE, shape_check, build_net(source, 10), (8, 8, 1), 10)
    assert "expected (2, 10)" in err.message and "(2, 8, 8, 10)" in err.message


def test_forward_failure_is_a_shape_error_with_line():
    source = src(
        """
        import flax.linen as nn

        class Net(nn.Module):
            num_classes: int = 10

            @nn.compact
            def __call__(self, x, train: bool = False):
                x = x.reshape((x.shape[0], 7))
                return nn.Dense(self.num_classes)(x)
        """
    )
    err = expect_error(ErrorKind.SHAPE, shape_check, build_net(source, 10), (8, 8, 1), 10)
    assert err.lineno == 8 and "line 8" in err.message


def test_tuple_output_is_a_shape_error():
    source = NO_TRAIN_FIXED_WIDTH.replace("return nn.Dense(10)(x)", "return nn.Dense(10)(x), x")
    err = expect_error(ErrorKind.SHAPE, shape_check, build_net(source, 10), (8, 8, 1), 10)
    assert "tuple" in err.message


def test_syntax_error_reports_its_line():
    err = expect_error(ErrorKind.SYNTAX, build_net, "import flax.linen as nn\n\nclass Net(nn.Module)\n    pass\n", 10)
    assert err.lineno == 3 and "line 3" in err.message


@pytest.mark.parametrize(
    "source, kind, words",
    [
        ("import flax.linen as nn\nx = 1\n", ErrorKind.BUILD, "defines no `Net`"),
        ("Net = 3\n", ErrorKind.BUILD, "subclass of flax.linen.Module"),
        ("class Net:\n    pass\n", ErrorKind.BUILD, "subclass of flax.linen.Module"),
        ("import flax.linen as nn\nraise ValueError('boom')\n", ErrorKind.BUILD, "line 2: ValueError: boom"),
        ("f = open('/etc/hostname')\n", ErrorKind.BUILD, "NameError"),
        ("import os\n", ErrorKind.POLICY, "'os'"),
        ("from flax import serialization\n", ErrorKind.POLICY, "flax.serialization"),
        ("from numpy import load\n", ErrorKind.POLICY, "numpy.load"),
        ("raise SystemExit(3)\n", ErrorKind.BUILD, "SystemExit"),
        (
            "import flax.linen as nn\nclass Net(nn.Module):\n    width: int\n"
            "    @nn.compact\n    def __call__(self, x):\n        return x\n",
            ErrorKind.BUILD,
            "instantiating",
        ),
    ],
)
def test_build_failures(source, kind, words):
    err = expect_error(kind, build_net, source, 10)
    assert words in err.message


def test_restricted_builtins_have_no_escape_hatches():
    # the policy refuses these names; if it missed one, the build namespace still lacks it
    for name in ("open", "eval", "exec", "getattr", "globals", "compile", "vars", "dir", "input"):
        err = expect_error(ErrorKind.BUILD, build_net, f"x = {name}\n", 10)
        assert "NameError" in err.message
    # the guarded import runs even when a refused module is spelled through __import__
    err = expect_error(ErrorKind.POLICY, build_net, "m = __import__('o' + 's')\n", 10)
    assert "'os'" in err.message


# ---------------------------------------------------------------------------
# structure hash
# ---------------------------------------------------------------------------

RES_A = src(
    '''
    """Small residual net."""
    import flax.linen as nn
    import jax.numpy as jnp


    class Block(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x):
            y = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME")(x))
            return x + nn.Conv(self.width, (3, 3), padding="SAME")(y)


    class Net(nn.Module):
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(16, (3, 3), padding="SAME")(x)
            x = Block(16)(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(self.num_classes)(x)
    '''
)

# The same network: other class/variable/layer names, explicit layer names, other formatting.
RES_A_RENAMED = src(
    """
    import flax.linen as nn
    import jax.numpy as jnp
    class Residual(nn.Module):
        features: int
        @nn.compact
        def __call__(self, inputs):
            h = nn.Conv(features=self.features, kernel_size=(3, 3), padding='SAME', name='zz_first')(inputs)
            h = nn.relu(h)
            return inputs + nn.Conv(self.features, (3, 3), padding='SAME', name='aa_second')(h)
    class Net(nn.Module):
        num_classes: int = 10
        @nn.compact
        def __call__(self, images, train=False):
            feats = nn.Conv(16, (3, 3), padding='SAME', name='stem')(images)
            feats = Residual(features=16, name='body')(feats)
            pooled = jnp.mean(feats, axis=(1, 2))
            return nn.Dense(self.num_classes, name='head')(pooled)
    """
)


def test_structure_hash_ignores_names_and_formatting():
    shape = (8, 8, 1)
    h_a = structure_hash(build_net(RES_A, 10), shape)
    h_b = structure_hash(build_net(RES_A_RENAMED, 10), shape)
    assert len(h_a) == 16 and h_a == h_b


def test_structure_hash_sees_width_activation_and_wiring():
    shape = (8, 8, 1)
    base = structure_hash(build_net(RES_A, 10), shape)
    wider = RES_A.replace("nn.Conv(16, (3, 3)", "nn.Conv(24, (3, 3)").replace("Block(16)", "Block(24)")
    gelu = RES_A.replace("y = nn.relu(", "y = nn.gelu(")
    no_skip = RES_A.replace("return x + nn.Conv", "return nn.Conv")
    hashes = {base} | {structure_hash(build_net(s, 10), shape) for s in (wider, gelu, no_skip)}
    assert len(hashes) == 4
    # the input shape is part of the structure, the number of classes too
    assert structure_hash(build_net(RES_A, 10), (28, 28, 1)) != base
    assert structure_hash(build_net(RES_A, 5), shape) != base
