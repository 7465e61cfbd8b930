"""LoRA adapters on the NNX Llama: identity at start, layer/target selection, merge, dropout, optimiser scope."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cenas_jax.config import LoRAConfig
from cenas_jax.errors import UserError
from cenas_jax.llm.lora import LoRAProjection, apply_lora, has_lora, lora_param_count, merge_lora
from cenas_jax.llm.model import Llama, LlamaConfig

TINY = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8
)
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TOKENS = (np.arange(24).reshape(2, 12) * 7 % 64).astype(np.int32)


@nnx.jit
def _logits(model, tokens):
    return model(tokens)


def _model(seed=0):
    return Llama(TINY, rngs=nnx.Rngs(seed))


def _randomise_adapters(model, seed=3, scale=0.05):
    """Give lora_b non-zero values so the adapters change the output."""
    state = nnx.state(model, nnx.LoRAParam)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, new))


def _proj(model, i, name):
    parent = model.layers[i].attn if name in ALL[:4] else model.layers[i].mlp
    return getattr(parent, name)


def test_fresh_adapters_leave_logits_bit_identical():
    model = _model()
    before = np.asarray(_logits(model, TOKENS))
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    after = np.asarray(_logits(model, TOKENS))
    assert np.array_equal(before, after)
    # B starts at zero, A does not (otherwise the adapter could never learn).
    proj = _proj(model, 0, "q_proj")
    assert not np.any(np.asarray(proj.lora.lora_b[...]))
    assert np.any(np.asarray(proj.lora.lora_a[...]))


def test_param_count_and_shapes_follow_rank_and_dims():
    model = _model()
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    c = TINY
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    dims = [(c.hidden_size, q), (c.hidden_size, kv), (c.hidden_size, kv), (q, c.hidden_size),
            (c.hidden_size, c.intermediate_size), (c.hidden_size, c.intermediate_size),
            (c.intermediate_size, c.hidden_size)]
    per_layer = sum(4 * (i + o) for i, o in dims)
    assert lora_param_count(model) == c.num_layers * per_layer
    proj = _proj(model, 2, "down_proj")
    assert proj.lora.lora_a.shape == (c.intermediate_size, 4)
    assert proj.lora.lora_b.shape == (4, c.hidden_size)
    assert proj.scale == pytest.approx(2.0)


def test_layer_and_target_selection():
    model = _model()
    apply_lora(model, LoRAConfig(rank=2, alpha=2.0, targets=("v_proj", "up_proj"), layers=(0, -1)), nnx.Rngs(1))
    for i in range(TINY.num_layers):
        for name in ALL:
            wrapped = isinstance(_proj(model, i, name), LoRAProjection)
            assert wrapped == (i in (0, 2) and name in ("v_proj", "up_proj")), (i, name)
    kv = TINY.num_kv_heads * TINY.head_dim
    assert lora_param_count(model) == 2 * (2 * (TINY.hidden_size + kv) + 2 * (TINY.hidden_size + TINY.intermediate_size))


def test_bad_layer_index_and_double_apply_are_user_errors():
    model = _model()
    with pytest.raises(UserError, match="lora.layers: index 3"):
        apply_lora(model, LoRAConfig(rank=2, layers=(3,)), nnx.Rngs(1))
    with pytest.raises(UserError, match="lora.layers: index -4"):
        apply_lora(model, LoRAConfig(rank=2, layers=(-4,)), nnx.Rngs(1))
    apply_lora(model, LoRAConfig(rank=2, layers=(1,)), nnx.Rngs(1))
    with pytest.raises(UserError, match="already has a LoRA adapter"):
        apply_lora(model, LoRAConfig(rank=2, layers=(1,)), nnx.Rngs(1))


def test_adapter_output_is_base_plus_scaled_low_rank_update():
    model = _model()
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, TINY.hidden_size)), np.float64)
    base_k = np.asarray(_proj(model, 1, "k_proj").kernel[...], np.float64)
    apply_lora(model, LoRAConfig(rank=3, alpha=12.0, targets=("k_proj",)), nnx.Rngs(1))
    _randomise_adapters(model)
    proj = _proj(model, 1, "k_proj")
    a, b = np.asarray(proj.lora.lora_a[...], np.float64), np.asarray(proj.lora.lora_b[...], np.float64)
    want = x @ base_k + 4.0 * (x @ a @ b)  # alpha / rank = 4
    got = np.asarray(proj(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_merge_equals_adapted_model_and_removes_adapters():
    model = _model()
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    _randomise_adapters(model)
    adapted = np.asarray(_logits(model, TOKENS))
    base = np.asarray(_logits(_model(), TOKENS))
    assert np.max(np.abs(adapted - base)) > 1e-2  # the adapters matter
    merge_lora(model)
    assert not has_lora(model) and lora_param_count(model) == 0
    assert isinstance(_proj(model, 0, "q_proj"), nnx.Linear)
    np.testing.assert_allclose(np.asarray(_logits(model, TOKENS)), adapted, rtol=0, atol=1e-5)


def test_dropout_acts_only_in_training_mode():
    model = _model()
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, dropout=0.5), nnx.Rngs(1))
    _randomise_adapters(model)
    eval_out = np.asarray(_logits(model, TOKENS))
    assert np.array_equal(eval_out, np.asarray(_logits(model, TOKENS)))
    merged = _model()
    apply_lora(merged, LoRAConfig(rank=4, alpha=8.0), nnx.Rngs(1))
    _randomise_adapters(merged)
    # In evaluation mode dropout is the identity: same output as the dropout-free adapter.
    np.testing.assert_allclose(eval_out, np.asarray(_logits(merged, TOKENS)), atol=1e-6)
    train_out = np.asarray(_logits(nnx.view(model, deterministic=False), TOKENS))
    assert np.max(np.abs(train_out - eval_out)) > 1e-3


def test_optimizer_holds_state_for_adapters_only():
    model = _model()
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, layers=(-1,)), nnx.Rngs(1))
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.LoRAParam)
    mu = opt.opt_state[0].mu
    assert sum(x.size for x in jax.tree.leaves(mu)) == lora_param_count(model)
