"""A Llama-family decoder in Flax NNX (Llama, Mistral, SmolLM, Qwen2) with a KV cache.

Grouped-query attention, RoPE in Hugging Face's rotate-half convention (with
``linear`` and ``llama3`` frequency scaling), RMSNorm, SwiGLU MLP, tied or
untied output head, optional q/k/v bias (Qwen2). Every parameter carries
logical sharding axes (``vocab``, ``embed``, ``heads``, ``kv``, ``mlp``) that
``llm/sharding.py`` maps onto a device mesh.

Two entry points share one layer stack:
- ``model(tokens_BxT)`` -> float32 logits ``BxTxV``, causal (right padding is harmless);
- ``model.extend(tokens_BxT, positions_BxT, cache, cache_index, kv_mask_BxS)`` writes
  the new keys/values into a preallocated ``KVCache`` at slots
  ``[cache_index, cache_index + T)`` and attends to every valid slot up to its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Logical axis names of the parameters (see llm/sharding.py for the mesh rules).
VOCAB_AXIS, EMBED_AXIS, HEADS_AXIS, KV_AXIS, MLP_AXIS = "vocab", "embed", "heads", "kv", "mlp"


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder.

    ``rope_scaling`` is given as a dict (``{"rope_type": "llama3", "factor": 8.0, ...}``
    or ``{"rope_type": "linear", "factor": 2.0}``) and stored as a sorted tuple of
    items so the config stays hashable (it is static under ``jit``); read it back
    with ``rope_scaling_dict``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: Any = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        if isinstance(self.eos_token_ids, int):
            object.__setattr__(self, "eos_token_ids", (self.eos_token_ids,))
        object.__setattr__(self, "eos_token_ids", tuple(int(e) for e in self.eos_token_ids))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        kind = self.rope_type
        if kind not in ("default", "linear", "llama3"):
            raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    @property
    def rope_type(self) -> str:
        d = self.rope_scaling_dict or {}
        return d.get("rope_type", d.get("type", "default"))

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """Build from a Hugging Face ``config.json`` dict (llama, mistral, qwen2, smollm).

        Reads both the transformers-5 ``rope_parameters`` and the older
        ``rope_theta`` + ``rope_scaling`` layouts.
        """
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in d]
        if missing:
            raise KeyError(f"config.json lacks {missing}")
        model_type = d.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "qwen2", "smollm", "smollm2"):
            raise ValueError(f"model_type {model_type!r} is not a Llama-family decoder this code supports")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {d.get('hidden_act')!r} is not supported (silu)")
        heads = int(d["num_attention_heads"])
        rope = dict(d.get("rope_parameters") or {})
        theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
        scaling = d.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling is not None:
            scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
            if scaling.get("rope_type", scaling.get("type", "default")) == "default":
                scaling = None
        eos = d.get("eos_token_id")
        eos_ids = () if eos is None else (tuple(eos) if isinstance(eos, (list, tuple)) else (eos,))
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or d["hidden_size"] // heads),
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama says so with attention_bias.
            attention_bias=bool(d.get("attention_bias", model_type == "qwen2")),
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
    """Inverse frequencies of RoPE after the config's scaling; shape (head_dim // 2,), float32."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    s = config.rope_scaling_dict or {}
    kind = config.rope_type
    if kind == "linear":
        inv = inv / float(s["factor"])
    elif kind == "llama3":
        factor = float(s["factor"])
        low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
        old_len = float(s["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)


def rope_cos_sin(positions_BxT: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos and sin tables for the positions; each ``BxTxD`` float32 (halves repeated, HF layout)."""
    angles = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BxTxHxD: jax.Array, cos_BxTxD: jax.Array, sin_BxTxD: jax.Array) -> jax.Array:
    """Rotate pairs (i, i + D/2) by the position angle (Hugging Face's rotate-half convention)."""
    half = x_BxTxHxD.shape[-1] // 2
    x = x_BxTxHxD.astype(jnp.float32)
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos_BxTxD[:, :, None, :] + rotated * sin_BxTxD[:, :, None, :]
    return out.astype(x_BxTxHxD.dtype)


class KVCache(NamedTuple):
    """Preallocated keys and values per layer: keys ``BxKxSxD``, values ``BxKxDxS`` (S slots, K key-value heads),
    the layouts attention's two products read without a transpose."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


class SharedPrompt(NamedTuple):
    """Prompts' keys and values held once for the rows that share them (decoding several answers per prompt).

    Per layer, keys ``UxKxPxD`` and values ``UxKxDxP`` of U distinct prompts (P slots, ``mask_UxP`` True at
    real tokens); ``grid_UxR`` names, for each prompt, the R rows that decode from it (a row index, any row
    for an unused cell); row b sits at cell (``prompt_B[b]``, ``cell_B[b]``). The rows' own ``KVCache``
    then holds only their generated tokens: every prompt slot precedes them, so all are visible.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    mask_UxP: jax.Array
    grid_UxR: jax.Array
    prompt_B: jax.Array
    cell_B: jax.Array


def _shared_prompt_attention(q_BxTxKxGxD, pk_UxKxPxD, pv_UxKxDxP, shared: SharedPrompt, ck_BxKxSxD, cv_BxKxDxS,
                             mask_BxTxS):
    """Attention over [a shared prompt's slots][the row's own slots], one softmax over both.

    The prompt part runs per prompt with its rows stacked as one matrix (the keys are read once for all
    of them, as a product with R·T·G rows); the rows' parts as usual; the two are merged by their maxima
    and sums (the log-sum-exp identity), so the result is that of one softmax over the concatenation.
    """
    f32 = jnp.float32
    d = q_BxTxKxGxD.shape[-1]
    scale = 1.0 / math.sqrt(d)
    neg = jnp.finfo(f32).min
    q_UxRxTxKxGxD = jnp.take(q_BxTxKxGxD, shared.grid_UxR, axis=0)
    sp = jnp.einsum("urtkgd,ukpd->urtkgp", q_UxRxTxKxGxD, pk_UxKxPxD, preferred_element_type=f32) * scale
    sp = jnp.where(shared.mask_UxP[:, None, None, None, None, :], sp, neg)
    mp = jnp.max(sp, axis=-1)
    ep = jnp.exp(sp - mp[..., None])
    lp = jnp.sum(ep, axis=-1)
    op = jnp.einsum("urtkgp,ukdp->urtkgd", ep.astype(pv_UxKxDxP.dtype), pv_UxKxDxP, preferred_element_type=f32)
    mp, lp, op = (x[shared.prompt_B, shared.cell_B] for x in (mp, lp, op))  # back to rows: BxTxKxG(xD)
    sr = jnp.einsum("btkgd,bksd->btkgs", q_BxTxKxGxD, ck_BxKxSxD, preferred_element_type=f32) * scale
    sr = jnp.where(mask_BxTxS[:, :, None, None, :], sr, neg)
    mr = jnp.max(sr, axis=-1)
    er = jnp.exp(sr - mr[..., None])
    lr = jnp.sum(er, axis=-1)
    orow = jnp.einsum("btkgs,bkds->btkgd", er.astype(cv_BxKxDxS.dtype), cv_BxKxDxS, preferred_element_type=f32)
    m = jnp.maximum(mp, mr)
    ap, ar = jnp.exp(mp - m), jnp.exp(mr - m)
    return (op * ap[..., None] + orow * ar[..., None]) / (lp * ap + lr * ar)[..., None]


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32 (as transformers does), scaled by ``weight``."""

    def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=(EMBED_AXIS,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


def _narrow_product(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    """``x @ w`` over x's last axis for a matrix stored narrower than the compute dtype (a sampler's bfloat16
    copy of float32 weights, ``Sampler(weights_dtype=...)``): x is rounded to w's dtype and the products are
    summed in ``out_dtype``, which on a CPU with bfloat16 dot instructions runs at twice float32's rate and
    reads half the bytes (DESIGN.md §4 "Generation speed")."""
    return jax.lax.dot_general(x.astype(w.dtype), w, (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=out_dtype)


class Linear(nnx.Linear):
    """``nnx.Linear`` that also takes a kernel narrower than its compute dtype (``_narrow_product``)."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        kernel = self.kernel[...]
        if self.dtype is None or jnp.dtype(kernel.dtype).itemsize >= jnp.dtype(self.dtype).itemsize:
            return super().__call__(inputs, out_sharding)
        y = _narrow_product(inputs, kernel, self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


def _linear(din: int, dout: int, axes: tuple[str, str], *, bias: bool, dtype, param_dtype, rngs) -> nnx.Linear:
    return Linear(
        din, dout, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(0.02), axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


# Query rows per block of the cache-free (causal) attention, ``causal_attention``. Measured on this 2-core
# CPU (attention forward + backward of one layer, 9 heads over 3 KV heads of 64, A/B interleaved under
# load): 4 x 256 tokens 52 ms with one masked softmax over the full score matrices (the code before),
# 25 ms with the same full matrices and the hand-written backward pass, 21 / 19 / 24 ms with blocks of
# 64 / 128 / 256; 1 x 768: 149, 72, 44 / 44 / 55 ms; 1 x 1024: 422, 139, 94 / 93 / 121 ms.
ATTENTION_BLOCK = 128


def causal_attention(q_BxTxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, mask_BxTxT: jax.Array,
                     block: int = ATTENTION_BLOCK) -> jax.Array:
    """Grouped-query softmax attention of T queries over the same T positions; returns ``BxTx(H*D)``.

    ``mask_BxTxT`` (True: query t may attend key s) must be causal (False wherever s > t), possibly with
    keys hidden (padding). Query rows go in blocks of ``block``; block i only builds the scores of the
    keys up to its own last row, so the score blocks above the diagonal are never built, and each
    block's softmax has a hand-written backward pass (``_block_attention``).
    """
    t = q_BxTxHxD.shape[1]
    outs = []
    for lo in range(0, t, block):
        hi = min(lo + block, t)
        outs.append(_block_attention(q_BxTxHxD[:, lo:hi], k_BxTxKxD[:, :hi], v_BxTxKxD[:, :hi], mask_BxTxT[:, lo:hi, :hi]))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def _block_forward(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS):
    """Softmax attention with heads grouped by KV head: output ``BxKxGxTxD`` (float32) and what the backward needs."""
    b, t, h, d = q_BxTxHxD.shape
    kh = k_BxSxKxD.shape[2]
    scale = 1.0 / math.sqrt(d)
    q_BxKxGxTxD = q_BxTxHxD.reshape(b, t, kh, h // kh, d).transpose(0, 2, 3, 1, 4)
    k_BxKxSxD = k_BxSxKxD.transpose(0, 2, 1, 3)
    v_BxKxSxD = v_BxSxKxD.transpose(0, 2, 1, 3)
    scores = jnp.einsum("bkgtd,bksd->bkgts", q_BxKxGxTxD, k_BxKxSxD, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
    # Unnormalised probabilities; the output is divided by their sum instead (T x D values, not T x S).
    p = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    denom = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("bkgts,bksd->bkgtd", p.astype(v_BxKxSxD.dtype), v_BxKxSxD,
                     preferred_element_type=jnp.float32) / denom
    return out, (q_BxKxGxTxD, k_BxKxSxD, v_BxKxSxD, p, denom)


def _heads_last(x_BxKxGxTxD: jax.Array) -> jax.Array:
    b, kh, g, t, d = x_BxKxGxTxD.shape
    return x_BxKxGxTxD.transpose(0, 3, 1, 2, 4).reshape(b, t, kh * g * d)


@jax.custom_vjp
def _block_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS):
    out, _ = _block_forward(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS)
    return _heads_last(out).astype(q_BxTxHxD.dtype)


def _block_attention_fwd(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS):
    out, res = _block_forward(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_BxTxS)
    return _heads_last(out).astype(q_BxTxHxD.dtype), (*res, out)


def _block_attention_bwd(res, g_BxTxF):
    q, k, v, p, denom, out = res  # q: BxKxGxTxD; k, v: BxKxSxD; p: BxKxGxTxS; denom: BxKxGxTx1
    b, kh, g, t, d = q.shape
    scale = 1.0 / math.sqrt(d)
    f32 = jnp.float32
    dout = g_BxTxF.astype(f32).reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4)
    # With P = p / denom: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)).
    dout_n = dout / denom
    dv = jnp.einsum("bkgts,bkgtd->bksd", p, dout_n)
    dp_n = jnp.einsum("bkgtd,bksd->bkgts", dout_n, v, preferred_element_type=f32)
    ds = p * (dp_n - jnp.sum(dout_n * out, axis=-1, keepdims=True))
    dq = jnp.einsum("bkgts,bksd->bkgtd", ds, k, preferred_element_type=f32) * scale
    dk = jnp.einsum("bkgts,bkgtd->bksd", ds, q, preferred_element_type=f32) * scale
    return (_heads_last(dq).reshape(b, t, kh * g, d).astype(q.dtype), dk.transpose(0, 2, 1, 3).astype(k.dtype),
            dv.transpose(0, 2, 1, 3).astype(v.dtype), None)


_block_attention.defvjp(_block_attention_fwd, _block_attention_bwd)


class Attention(nnx.Module):
    """Causal grouped-query self-attention with RoPE and an optional KV cache."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        c = config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = _linear(c.hidden_size, c.num_heads * c.head_dim, (EMBED_AXIS, HEADS_AXIS), bias=c.attention_bias, **kw)
        self.k_proj = _linear(c.hidden_size, c.num_kv_heads * c.head_dim, (EMBED_AXIS, KV_AXIS), bias=c.attention_bias, **kw)
        self.v_proj = _linear(c.hidden_size, c.num_kv_heads * c.head_dim, (EMBED_AXIS, KV_AXIS), bias=c.attention_bias, **kw)
        self.o_proj = _linear(c.num_heads * c.head_dim, c.hidden_size, (HEADS_AXIS, EMBED_AXIS), bias=False, **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.dtype = dtype

    def __call__(self, x_BxTxE, cos, sin, mask_BxTxS, layer_cache=None, cache_index=None, shared=None):
        """Attention output ``BxTxE`` and the updated (k, v) cache of this layer (or None).

        ``shared``: ``(prompt keys, prompt values, SharedPrompt)`` of this layer, attended before the cache.

        ``mask_BxTxS`` is True where query t may attend key slot s; without a
        cache the keys are this call's own T tokens (S == T) and the mask must be
        causal (``causal_attention``).
        """
        b, t, _ = x_BxTxE.shape
        kh, g, d = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        q = apply_rope(self.q_proj(x_BxTxE).reshape(b, t, self.num_heads, d), cos, sin)
        k = apply_rope(self.k_proj(x_BxTxE).reshape(b, t, kh, d), cos, sin)
        v = self.v_proj(x_BxTxE).reshape(b, t, kh, d)
        if layer_cache is None:
            return self.o_proj(causal_attention(q, k, v, mask_BxTxS).astype(self.dtype)), None
        new_cache = None
        if layer_cache is not None:
            ck_BxKxSxD, cv_BxKxDxS = layer_cache
            k_BxKxTxD = k.transpose(0, 2, 1, 3).astype(ck_BxKxSxD.dtype)
            v_BxKxDxT = v.transpose(0, 2, 3, 1).astype(cv_BxKxDxS.dtype)
            if jnp.ndim(cache_index) == 0:
                ck_BxKxSxD = jax.lax.dynamic_update_slice(ck_BxKxSxD, k_BxKxTxD, (0, 0, cache_index, 0))
                cv_BxKxDxS = jax.lax.dynamic_update_slice(cv_BxKxDxS, v_BxKxDxT, (0, 0, 0, cache_index))
            else:  # one slot per row (speculative decoding: rows advance by different amounts)
                ck_BxKxSxD = _write_rows(ck_BxKxSxD, k_BxKxTxD, cache_index, axis=1)
                cv_BxKxDxS = _write_rows(cv_BxKxDxS, v_BxKxDxT, cache_index, axis=2)
            new_cache = (ck_BxKxSxD, cv_BxKxDxS)
            q_BxTxKxGxD = q.reshape(b, t, kh, g, d)
            if shared is not None:
                pk, pv, sp = shared
                out = _shared_prompt_attention(q_BxTxKxGxD, pk.astype(self.dtype), pv.astype(self.dtype), sp,
                                               ck_BxKxSxD.astype(self.dtype), cv_BxKxDxS.astype(self.dtype), mask_BxTxS)
                return self.o_proj(out.astype(self.dtype).reshape(b, t, self.num_heads * d)), new_cache
            # The cache is kept in the layouts these two products read (keys slot-major, values slot-minor),
            # so no step transposes it (on XLA:CPU such transposes were half of a decode step).
            scores = jnp.einsum("btkgd,bksd->bkgts", q_BxTxKxGxD, ck_BxKxSxD.astype(self.dtype),
                                preferred_element_type=jnp.float32)
            scores = scores * (1.0 / math.sqrt(d))
            scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            out = jnp.einsum("bkgts,bkds->btkgd", probs, cv_BxKxDxS.astype(self.dtype)).reshape(b, t, self.num_heads * d)
            return self.o_proj(out), new_cache
        q_BxTxKxGxD = q.reshape(b, t, kh, g, d)
        scores = jnp.einsum("btkgd,bskd->bkgts", q_BxTxKxGxD, k, preferred_element_type=jnp.float32)
        scores = scores * (1.0 / math.sqrt(d))
        scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, self.num_heads * d)
        return self.o_proj(out), new_cache


def _write_rows(cache: jax.Array, new: jax.Array, index_B: jax.Array, *, axis: int) -> jax.Array:
    """Write row b's T new entries at slots ``[index_B[b], index_B[b] + T)`` of the slot axis ``axis`` (of a row)."""
    def one(c, u, i):
        start = [0] * c.ndim
        start[axis] = i
        return jax.lax.dynamic_update_slice(c, u, tuple(start))
    return jax.vmap(one)(cache, new, index_B)


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        c = config
        kw = dict(bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = _linear(c.hidden_size, c.intermediate_size, (EMBED_AXIS, MLP_AXIS), **kw)
        self.up_proj = _linear(c.hidden_size, c.intermediate_size, (EMBED_AXIS, MLP_AXIS), **kw)
        self.down_proj = _linear(c.intermediate_size, c.hidden_size, (MLP_AXIS, EMBED_AXIS), **kw)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: LlamaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.attn = Attention(config, rngs=rngs, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.mlp = MLP(config, rngs=rngs, **kw)

    def __call__(self, x, cos, sin, mask, layer_cache=None, cache_index=None, shared=None):
        h, new_cache = self.attn(self.input_layernorm(x), cos, sin, mask, layer_cache, cache_index, shared)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_cache


class Llama(nnx.Module):
    """The decoder: embedding, ``num_layers`` blocks, final norm, output head.

    ``Llama(config, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))``.
    """

    def __init__(self, config: LlamaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = dtype
        # Sharding annotations are metadata only here; llm/sharding.py places the arrays.
        with nnx.use_eager_sharding(False):
            self.embed_tokens = nnx.Embed(
                config.vocab_size, config.hidden_size, dtype=dtype, param_dtype=param_dtype,
                embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), (VOCAB_AXIS, EMBED_AXIS)),
                rngs=rngs,
            )
            self.layers = nnx.List(
                [DecoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                 for _ in range(config.num_layers)]
            )
            self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype, param_dtype=param_dtype)
            self.lm_head = None if config.tie_word_embeddings else _linear(
                config.hidden_size, config.vocab_size, (EMBED_AXIS, VOCAB_AXIS), bias=False,
                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.inv_freq = tuple(rope_inv_freq(config).tolist())  # static, not a parameter

    def head(self, h_BxTxE: jax.Array) -> jax.Array:
        """Float32 logits ``...xV`` of final-norm hidden states ``...xE`` (any leading axes): the output head."""
        table = self.embed_tokens.embedding[...]
        if self.lm_head is None and jnp.dtype(table.dtype).itemsize < jnp.dtype(self.dtype).itemsize:
            logits = _narrow_product(h_BxTxE, table.T, jnp.float32)  # tied head over a narrower copy
        elif self.lm_head is None:
            logits = self.embed_tokens.attend(h_BxTxE)
        else:
            logits = self.lm_head(h_BxTxE)
        return logits.astype(jnp.float32)

    def embed(self, tokens_BxT: jax.Array) -> jax.Array:
        """The input embeddings ``BxTxE`` in the compute dtype (rows looked up before any cast)."""
        return jnp.take(self.embed_tokens.embedding[...], tokens_BxT, axis=0).astype(self.dtype)

    def _run(self, tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_index, shared=None):
        x = self.embed(tokens_BxT)
        cos, sin = rope_cos_sin(positions_BxT, np.asarray(self.inv_freq, np.float32))
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            layer_shared = None if shared is None else (shared.k[i], shared.v[i], shared)
            x, lc = layer(x, cos, sin, mask_BxTxS, layer_cache, cache_index, layer_shared)
            if lc is not None:
                new_k.append(lc[0])
                new_v.append(lc[1])
        h = self.norm(x)
        return h, (KVCache(tuple(new_k), tuple(new_v)) if cache is not None else None)

    def _causal_layers(self, x_BxTxE: jax.Array, lo: int, hi: int) -> jax.Array:
        """Layers ``lo..hi-1`` of a causal pass (positions ``0..T-1``, no cache) applied to ``x``."""
        if not 0 <= lo <= hi <= len(self.layers):
            raise ValueError(f"layers {lo}..{hi} are out of range for a model with {len(self.layers)} layers")
        b, t, _ = x_BxTxE.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        cos, sin = rope_cos_sin(positions, np.asarray(self.inv_freq, np.float32))
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        for blk in list(self.layers)[lo:hi]:
            x_BxTxE, _ = blk(x_BxTxE, cos, sin, mask)
        return x_BxTxE

    def layer_inputs(self, tokens_BxT: jax.Array, layer: int) -> jax.Array:
        """The hidden states ``BxTxE`` entering layer ``layer`` of a causal pass (positions ``0..T-1``).

        With ``hidden_from`` this splits ``hidden_states`` in two at ``layer``: the fine-tuning
        caches the output of the frozen layers below the first adapted one.
        """
        return self._causal_layers(self.embed(tokens_BxT), 0, layer)

    def hidden_from(self, x_BxTxE: jax.Array, layer: int) -> jax.Array:
        """Final-norm hidden states from ``x_BxTxE`` entering layer ``layer`` (see ``layer_inputs``)."""
        return self.norm(self._causal_layers(x_BxTxE, layer, len(self.layers)))

    def logits_from(self, x_BxTxE: jax.Array, layer: int) -> jax.Array:
        """Float32 logits ``BxTxV`` from the hidden states entering layer ``layer``."""
        return self.head(self.hidden_from(x_BxTxE, layer))

    def hidden_states(self, tokens_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                      mask_BxT: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states ``BxTxE`` of a full causal pass (see ``__call__``)."""
        b, t = tokens_BxT.shape
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        causal_TxT = jnp.tril(jnp.ones((t, t), bool))
        mask = jnp.broadcast_to(causal_TxT, (b, t, t))
        if mask_BxT is not None:
            mask = mask & mask_BxT[:, None, :].astype(bool)
        h, _ = self._run(tokens_BxT, positions_BxT, mask, None, None)
        return h

    def __call__(self, tokens_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                 mask_BxT: jax.Array | None = None) -> jax.Array:
        """Float32 logits ``BxTxV`` of a full causal pass over ``tokens_BxT`` (int).

        ``positions_BxT`` defaults to ``0..T-1``; ``mask_BxT`` (True = real token)
        hides padding keys — needed for left padding only, right padding is
        already invisible to earlier positions under the causal mask.
        """
        return self.head(self.hidden_states(tokens_BxT, positions_BxT, mask_BxT))

    def init_cache(self, batch: int, length: int, dtype=None) -> KVCache:
        """Zeroed KV cache for ``batch`` rows and ``length`` slots (dtype defaults to the compute dtype)."""
        c = self.config
        dtype = dtype or self.dtype
        k_shape = (batch, c.num_kv_heads, length, c.head_dim)
        v_shape = (batch, c.num_kv_heads, c.head_dim, length)
        return KVCache(tuple(jnp.zeros(k_shape, dtype) for _ in range(c.num_layers)),
                       tuple(jnp.zeros(v_shape, dtype) for _ in range(c.num_layers)))

    def extend(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, cache: KVCache,
               cache_index: jax.Array, kv_mask_BxS: jax.Array, *, last_only: bool = False,
               shared: SharedPrompt | None = None) -> tuple[jax.Array, KVCache]:
        """Append T tokens at cache slots ``[cache_index, cache_index + T)``; float32 logits and the new cache.

        ``cache_index`` is a scalar (every row writes at the same slots) or one slot per row (``B``).

        ``kv_mask_BxS`` (bool, S = cache length) marks slots holding real tokens
        (False for left padding); query t sees slot s iff ``kv_mask[b, s]`` and
        ``s <= cache_index + t``. ``last_only`` computes logits of the last
        position only (``Bx1xV``), which is all a prefill needs. ``shared``: prompts held once for several
        rows (``SharedPrompt``), attended before this cache, which then holds the rows' own tokens only.
        """
        t = tokens_BxT.shape[1]
        s = cache.k[0].shape[2]
        q_slot_BxT = jnp.reshape(cache_index, (-1, 1)) + jnp.arange(t)[None, :]  # one row broadcasts
        causal_BxTxS = jnp.arange(s)[None, None, :] <= q_slot_BxT[:, :, None]
        mask = causal_BxTxS & kv_mask_BxS[:, None, :].astype(bool)
        h, new_cache = self._run(tokens_BxT, positions_BxT, mask, cache, cache_index, shared)
        if last_only:
            h = h[:, -1:, :]
        return self.head(h), new_cache
