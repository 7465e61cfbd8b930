"""The sampling rule: temperature, then top-k, then top-p, then a draw (greedy where temperature is 0).

Plain decoding (``llm/sampler.py``) draws from this distribution, and speculative decoding
(``llm/speculative.py``) accepts drafted tokens against it, so it is defined once, here.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp

# How often each jitted decoding function was traced (= compiled) in this process, by kind ("prefill",
# "decode"); a sampler reports the traces its own calls caused (``Sampler.compile_counts``).
TRACES: collections.Counter[str] = collections.Counter()


def filtered_logits(logits_NxV: jax.Array, temperature_N: jax.Array, top_k: int, top_p: float
                    ) -> tuple[jax.Array, jax.Array | None]:
    """The distribution a row samples from: (scaled logits ``NxW`` with -inf for excluded tokens, the
    token id of each column ``NxW``, or None when the columns are the whole vocabulary in order).

    ``top_k`` 0 and ``top_p`` 1 switch those filters off (both are static). Top-p keeps the best
    tokens whose cumulative probability before them is below ``top_p`` (so the best token stays).
    """
    if top_k > 0:
        vals, idx = jax.lax.top_k(logits_NxV, min(top_k, logits_NxV.shape[-1]))
    elif top_p < 1.0:
        idx = jnp.argsort(-logits_NxV, axis=-1)
        vals = jnp.take_along_axis(logits_NxV, idx, axis=-1)
    else:
        vals, idx = logits_NxV, None
    scaled = vals / jnp.maximum(temperature_N, 1e-6)[:, None]
    if top_p < 1.0:
        probs = jax.nn.softmax(scaled, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
        scaled = jnp.where(before < top_p, scaled, -jnp.inf)
    return scaled, idx


def column_ids(idx_NxW: jax.Array | None, n: int, width: int) -> jax.Array:
    """The token id of each column of ``filtered_logits``'s output."""
    return jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (n, width)) if idx_NxW is None else idx_NxW


def sample_tokens(logits_BxV: jax.Array, key: jax.Array, temperature_B: jax.Array,
                  top_k: int, top_p: float) -> jax.Array:
    """Next token per row: argmax where temperature is 0, else temperature -> top-k -> top-p sampling.

    ``key``: one key for the batch, or one per row (shape ``B``); with a key per row, a row's draw
    depends on its own key and logits only, never on its batch mates. ``top_k`` 0 and ``top_p`` 1
    switch those filters off; both are static.
    """
    greedy_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

    def draw(_):
        scaled, idx_BxK = filtered_logits(logits_BxV, temperature_B, top_k, top_p)
        if key.ndim == 0:
            choice_B = jax.random.categorical(key, scaled, axis=-1)
        else:
            choice_B = jax.vmap(lambda k, row: jax.random.categorical(k, row))(key, scaled)
        tok = choice_B if idx_BxK is None else jnp.take_along_axis(idx_BxK, choice_B[:, None], axis=-1)[:, 0]
        return jnp.where(temperature_B > 0, tok.astype(jnp.int32), greedy_B)

    # All-greedy batches skip the top-k/top-p work at run time (no recompile either way).
    return jax.lax.cond(jnp.any(temperature_B > 0), draw, lambda _: greedy_B, None)
