"""The fine-tuning's speed-ups keep its numbers: the chunked LM head + loss, block-causal attention, length buckets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_llm_finetune import PAIRS, _adapted, _cfg

from cenas_jax.llm import finetune as ft

# Two rows of 11 positions: row 0 has a 3-token prompt and right padding, row 1 a 5-token prompt
# and no padding; 13 loss positions of 22.
MASK = np.zeros((2, 11), np.float32)
MASK[0, 2:8] = 1.0
MASK[1, 4:11] = 1.0


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 64, MASK.shape).astype(np.int32)
    targets = rng.integers(3, 64, MASK.shape).astype(np.int32)
    tokens[0, 8:] = 0  # padding
    return jnp.asarray(tokens), jnp.asarray(targets), jnp.asarray(MASK)


def _full_nll(logits, targets, mask):
    """The per-row loss from full B x T x V logits (what the fine-tuning computed before the chunked head)."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.sum((lse - target_logit) * mask, axis=-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 13, 22, 64])  # dividing the 13 loss / 22 positions or not, one chunk
def test_gathered_nll_equals_full_logits_per_position(chunk):
    model = _adapted(randomise=True)
    tokens, targets, mask = _batch()
    h = model.hidden_states(tokens)
    nll, index, valid = jax.jit(lambda h: ft.gathered_nll(model.head, h, targets, mask, chunk))(h)
    nll, index, valid = np.asarray(nll), np.asarray(index), np.asarray(valid)
    assert nll.shape[0] % chunk == 0 and nll.shape[0] >= 22
    # The loss positions, in row-major order, then filler.
    assert valid.sum() == 13 and valid[:13].all()
    np.testing.assert_array_equal(index[:13], np.flatnonzero(MASK.reshape(-1)))
    logits = np.asarray(model(tokens), np.float64).reshape(22, -1)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    want = lse - logits[np.arange(22), np.asarray(targets).reshape(-1)]
    np.testing.assert_allclose(nll[:13], want[index[:13]], rtol=1e-5)


@pytest.mark.parametrize("chunk", [3, 7, 13, 64])
def test_chunked_loss_and_adapter_gradients_equal_full_logits(chunk):
    model = _adapted(randomise=True)
    tokens, targets, mask = _batch(1)
    coef = jnp.asarray([0.3, 0.7], jnp.float32)
    graphdef, lora_params, rest = nnx.split(model, nnx.LoRAParam, ...)

    def full(params):
        m = nnx.merge(graphdef, params, rest)
        return jnp.sum(coef * _full_nll(m(tokens), targets, mask))

    def chunked(params):
        m = nnx.merge(graphdef, params, rest)
        nll, index, valid = ft.gathered_nll(m.head, m.hidden_states(tokens), targets, mask, chunk)
        w = jnp.take((coef[:, None] * mask).reshape(-1), index)
        return jnp.sum(jnp.where(valid, w * nll, 0.0))

    loss_full, g_full = jax.jit(jax.value_and_grad(full))(lora_params)
    loss_chunked, g_chunked = jax.jit(jax.value_and_grad(chunked))(lora_params)
    assert float(loss_chunked) == pytest.approx(float(loss_full), rel=1e-5)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_chunked)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    assert max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(g_full)) > 1e-3


def test_chunks_without_loss_positions_are_not_computed():
    model = _adapted()
    tokens, targets, mask = _batch()
    rows = []

    def counting_head(h):
        jax.debug.callback(lambda n: rows.append(int(n)), h.shape[0])
        return model.head(h)

    h = model.hidden_states(tokens)
    # 22 positions in 8 chunks of 3; the 13 loss positions fill 5 of them: 15 rows through the head.
    jax.block_until_ready(jax.jit(lambda h: ft.gathered_nll(counting_head, h, targets, mask, 3))(h))
    assert rows == [3] * 5
    # Differentiated, the same chunks compute their gradient as they go: the backward pass runs no head.
    rows.clear()
    def loss(h):
        nll, _, valid = ft.gathered_nll(counting_head, h, targets, mask, 3)
        return jnp.sum(jnp.where(valid, nll, 0.0))

    grad = jax.jit(jax.grad(loss))(h)
    jax.block_until_ready(grad)
    assert rows == [3] * 5
    # No gradient reaches the hidden states of positions outside the loss (a causal model's last
    # layer: only the loss positions' own states feed the head).
    g = np.abs(np.asarray(grad)).sum(-1)
    assert (g[MASK > 0] > 0).all() and (g[MASK == 0] == 0).all()


def test_finetune_loss_and_gradients_equal_the_full_logits_reference():
    """``loss_and_grads`` (chunked head, micro-batches, prompt masking, padding) against full logits."""
    model = _adapted(randomise=True)
    cfg = _cfg(batch_size=4, grad_accum=2)
    loss, grads = ft.loss_and_grads(model, PAIRS, cfg)
    seqs = [list(p) + list(c) for p, c in PAIRS]
    tokens = np.zeros((4, 16), np.int32)
    targets = np.zeros((4, 16), np.int32)
    mask = np.zeros((4, 16), np.float32)
    for r, ((p, _), s) in enumerate(zip(PAIRS, seqs)):
        tokens[r, : len(s) - 1], targets[r, : len(s) - 1] = s[:-1], s[1:]
        mask[r, len(p) - 1 : len(s) - 1] = 1.0
    graphdef, lora_params, rest = nnx.split(model, nnx.LoRAParam, ...)

    def full(params):
        return jnp.mean(_full_nll(nnx.merge(graphdef, params, rest)(tokens), targets, mask))

    want_loss, want_grads = jax.jit(jax.value_and_grad(full))(lora_params)
    assert loss == pytest.approx(float(want_loss), rel=1e-5)
    for a, b in zip(jax.tree.leaves(want_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_differentiating_the_frozen_head_is_refused():
    model = _adapted()
    tokens, targets, mask = _batch()
    h = model.hidden_states(tokens)
    w = model.lm_head.kernel[...]

    def loss(w):
        return jnp.sum(ft.gathered_nll(lambda x: x @ w, h, targets, mask, 4)[0])

    with pytest.raises(ValueError, match="output head is frozen"):
        jax.grad(loss)(w)
    assert np.isfinite(float(loss(w)))  # evaluating (not differentiating) is fine


def _masked_softmax_attention(q, k, v, mask):
    """The plain attention (the model's code before query blocks): full score matrices, one masked softmax."""
    b, t, h, d = q.shape
    kh = k.shape[2]
    scores = jnp.einsum("btkgd,bskd->bkgts", q.reshape(b, t, kh, h // kh, d), k) / np.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bkgts,bskd->btkgd", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, h * d)


@pytest.mark.parametrize("block", [4, 5, 11, 16])  # dividing T = 12 or not, one block
def test_block_causal_attention_equals_masked_softmax(block):
    from cenas_jax.llm.model import causal_attention

    rng = np.random.default_rng(3)
    b, t, h, kh, d = 2, 12, 4, 2, 8
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32) for n in (h, kh, kh))
    mask = np.tril(np.ones((t, t), bool))[None].repeat(b, 0)
    mask[0, :, :3] = False  # row 0: three left-padding keys, hidden from every query
    mask = jnp.asarray(mask)
    # Queries that see no key at all (row 0's padding) have no defined output: weight 0.
    w = rng.normal(size=(b, t, h * d)).astype(np.float32)
    w[0, :3] = 0.0
    w = jnp.asarray(w)
    got = causal_attention(q, k, v, mask, block)
    want = _masked_softmax_attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(got)[w[..., 0] != 0], np.asarray(want)[w[..., 0] != 0], rtol=1e-5, atol=1e-6)

    def loss(f):
        return jax.grad(lambda q, k, v: jnp.sum(w * f(q, k, v)), argnums=(0, 1, 2))(q, k, v)

    grads_got = loss(lambda q, k, v: causal_attention(q, k, v, mask, block))
    grads_want = loss(lambda q, k, v: _masked_softmax_attention(q, k, v, mask))
    for a, c in zip(grads_want, grads_got):
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(a).max()) > 1e-2
