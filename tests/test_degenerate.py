"""Degenerate programs flagged from the jaxpr: linear models, constant outputs, parameters that never reach the logits."""

from __future__ import annotations

import pytest

from cenas_jax.candidates.contract import build_net
from cenas_jax.candidates.corpus import load_corpus
from cenas_jax.candidates.degenerate import degeneracy_flags, flag_codes

HEAD = "import flax.linen as nn\nimport jax.numpy as jnp\n\n"

# The demo's top "architecture": an edit put `return` inside the layer loop; the rest is dead code.
RETURN_IN_LOOP = HEAD + """
class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in (64, 32):
            x = nn.Dense(width)(x)
            return nn.Dense(self.num_classes)(x)
            x = nn.relu(x)
        return x
"""
NO_RELU = HEAD + """
class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(32)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = jnp.mean(x, axis=-1, keepdims=True) + x
        return nn.Dense(self.num_classes)(x)
"""
DEAD_BRANCH = HEAD + """
class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        side = nn.Dense(50, name="side")(x)
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(self.num_classes)(x)
"""
CONSTANT = HEAD + """
class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        b = self.param("b", nn.initializers.zeros, (self.num_classes,))
        return jnp.zeros((x.shape[0], self.num_classes)) + b
"""
MLP = HEAD + """
class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(self.num_classes)(x)
"""
SHAPE = (8, 8, 1)


def test_return_inside_the_layer_loop_is_a_linear_model():
    assert flag_codes(degeneracy_flags(build_net(RETURN_IN_LOOP, 10), SHAPE)) == ["linear"]


def test_a_deleted_activation_leaves_an_affine_map_batchnorm_and_mean_included():
    flags = degeneracy_flags(build_net(NO_RELU, 10), SHAPE)
    assert flag_codes(flags) == ["linear"]


def test_a_discarded_layer_is_dead_parameters_named_by_layer():
    flags = degeneracy_flags(build_net(DEAD_BRANCH, 10), SHAPE)
    assert flag_codes(flags) == ["dead_params"]
    assert "3,250 parameters" in flags[0] and "side (bias, kernel)" in flags[0]  # 64*50 + 50


def test_an_output_that_ignores_the_input_is_constant():
    assert flag_codes(degeneracy_flags(build_net(CONSTANT, 10), SHAPE)) == ["constant"]


def test_a_real_mlp_is_not_flagged():
    assert degeneracy_flags(build_net(MLP, 10), SHAPE) == []


@pytest.mark.parametrize("entry", load_corpus(), ids=lambda e: e.name)
def test_no_corpus_program_is_flagged(entry):
    assert degeneracy_flags(build_net(entry.source, 10), (32, 32, 3)) == []
