"""Speculative decoding by prompt lookup: draft from the row's own text, verify k+1 positions in one forward.

The search's completions copy long runs of the program shown in their prompt (a SEARCH block
repeats the parent's lines; a full program rewrites most of the example). Each decode step
drafts ``k`` tokens per row by *prompt lookup*: find the most recent earlier occurrence of the
row's last ``n`` tokens in its prompt and output (n from ``max_ngram`` down to 1) and propose
what followed it. One forward over ``[last token, draft_1..draft_k]`` gives the model's
distribution at all ``k+1`` positions; each row accepts its longest acceptable prefix of the
draft and adds one token of its own, so a row advances by 1 to ``k+1`` tokens per forward and
rows advance by different amounts (each row has its own cache slot and position).

Exactness (DESIGN.md §4, "Generation speed: shared prefixes and speculative decoding"):
- greedy rows accept a drafted token iff it is the argmax, and add the argmax where they stop:
  the tokens are those of plain greedy decoding;
- sampled rows use the speculative-sampling rule for a deterministic draft (the draft
  distribution is a point mass): accept draft ``d`` with probability ``p(d)``, where ``p`` is the
  filtered (temperature, top-k, top-p) distribution plain sampling draws from; on rejection draw
  from ``p`` with ``d`` removed and renormalised. Every token then has exactly the distribution
  plain sampling gives it (not the same draws: the random numbers are used differently).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from cenas_jax.llm.sampling import TRACES, column_ids, filtered_logits, sample_tokens


def lookup_drafts(hist_BxL: jax.Array, length_B: jax.Array, start_B: jax.Array, *, k: int,
                  max_ngram: int) -> tuple[jax.Array, jax.Array]:
    """``k`` drafted tokens per row and whether a match was found.

    ``hist_BxL`` holds row b's known tokens at ``[start_B[b], length_B[b])``. The draft is what
    followed the most recent earlier occurrence of the row's last n tokens, for the largest
    n <= ``max_ngram`` that occurs; where that continuation runs into the row's end, the copy
    goes on periodically (a repeated line drafts its next repetition). Rows without a match get
    their last token repeated (any draft keeps decoding exact; this one is just rarely accepted).
    """
    b, L = hist_BxL.shape
    last_B = jnp.take_along_axis(hist_BxL, jnp.maximum(length_B - 1, 0)[:, None], axis=1)[:, 0]
    draft_BxK = jnp.broadcast_to(last_B[:, None], (b, k))
    found_B = jnp.zeros((b,), bool)
    for n in range(max_ngram, 0, -1):
        query_BxN = jnp.take_along_axis(hist_BxL, jnp.clip(length_B[:, None] - n + jnp.arange(n), 0, L - 1), axis=1)
        width = L - n + 1
        match_BxW = jnp.ones((b, width), bool)
        for i in range(n):
            match_BxW &= hist_BxL[:, i:i + width] == query_BxN[:, i:i + 1]
        j_W = jnp.arange(width)
        ok_BxW = match_BxW & (j_W[None, :] >= start_B[:, None]) & (j_W[None, :] + n < length_B[:, None])
        best_B = jnp.max(jnp.where(ok_BxW, j_W[None, :], -1), axis=1)
        hit_B = (best_B >= 0) & (length_B - start_B > n)
        offset_B = jnp.maximum(length_B - best_B - n, 1)  # the copy's period: tokens between match and end
        idx_BxK = best_B[:, None] + n + jnp.arange(k)[None, :] % offset_B[:, None]
        cand_BxK = jnp.take_along_axis(hist_BxL, jnp.clip(idx_BxK, 0, L - 1), axis=1)
        use_B = hit_B & ~found_B
        draft_BxK = jnp.where(use_B[:, None], cand_BxK, draft_BxK)
        found_B |= hit_B
    return draft_BxK, found_B


def accept(logits_BxTxV: jax.Array, draft_BxK: jax.Array, temperature_B: jax.Array, keys_B: jax.Array,
           *, top_k: int, top_p: float) -> tuple[jax.Array, jax.Array]:
    """(accepted count ``B`` in 0..k, the row's own next token ``B``) from the verify forward's logits.

    ``logits[:, t]`` is the distribution of the token after input t, where input 0 is the last
    emitted token and input t >= 1 is draft t-1 (T = k + 1). ``keys_B``: one fresh key per row.
    """
    b, t, v = logits_BxTxV.shape
    k = t - 1
    greedy_BxT = jnp.argmax(logits_BxTxV, axis=-1).astype(jnp.int32)
    ok_greedy_BxK = draft_BxK == greedy_BxT[:, :k]
    n_greedy_B = jnp.sum(jnp.cumprod(ok_greedy_BxK, axis=1), axis=1).astype(jnp.int32)
    bonus_greedy_B = jnp.take_along_axis(greedy_BxT, n_greedy_B[:, None], axis=1)[:, 0]

    def sampled(_):
        flat = logits_BxTxV.reshape(b * t, v)
        scaled, idx = filtered_logits(flat, jnp.repeat(temperature_B, t), top_k, top_p)
        width = scaled.shape[-1]
        scaled_BxTxW = scaled.reshape(b, t, width)
        ids_BxTxW = column_ids(idx, b * t, width).reshape(b, t, width)
        probs_BxTxW = jax.nn.softmax(scaled_BxTxW, axis=-1)
        is_draft_BxKxW = ids_BxTxW[:, :k] == draft_BxK[:, :, None]
        p_draft_BxK = jnp.sum(jnp.where(is_draft_BxKxW, probs_BxTxW[:, :k], 0.0), axis=-1)
        u_BxK = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, 0), (k,)))(keys_B)
        n_B = jnp.sum(jnp.cumprod(u_BxK < p_draft_BxK, axis=1), axis=1).astype(jnp.int32)
        # Where the row stopped: the residual (draft removed) after a rejection, the plain distribution
        # after k acceptances.
        at_BxW = jnp.take_along_axis(scaled_BxTxW, n_B[:, None, None], axis=1)[:, 0]
        ids_at_BxW = jnp.take_along_axis(ids_BxTxW, n_B[:, None, None], axis=1)[:, 0]
        rejected_B = n_B < k
        draft_at_B = jnp.take_along_axis(draft_BxK, jnp.minimum(n_B, k - 1)[:, None], axis=1)[:, 0]
        at_BxW = jnp.where(rejected_B[:, None] & (ids_at_BxW == draft_at_B[:, None]), -jnp.inf, at_BxW)
        choice_B = jax.vmap(lambda key, row: jax.random.categorical(jax.random.fold_in(key, 1), row))(keys_B, at_BxW)
        tok_B = jnp.take_along_axis(ids_at_BxW, choice_B[:, None], axis=1)[:, 0].astype(jnp.int32)
        hot_B = temperature_B > 0
        return jnp.where(hot_B, n_B, n_greedy_B), jnp.where(hot_B, tok_B, bonus_greedy_B)

    return jax.lax.cond(jnp.any(temperature_B > 0), sampled, lambda _: (n_greedy_B, bonus_greedy_B), None)


def _put_rows(x_BxN: jax.Array, new_BxT: jax.Array, at_B: jax.Array) -> jax.Array:
    return jax.vmap(lambda row, u, i: jax.lax.dynamic_update_slice(row, u, (i,)))(x_BxN, new_BxT, at_B)


@functools.partial(jax.jit, static_argnames=("graphdef", "k", "max_ngram", "top_k", "top_p"),
                   donate_argnames=("carry",))
def decode_speculative(graphdef, state, carry, prompt_BxP, start_B, temperature_B, eos_E, keys_B, limit, *,
                       k: int, max_ngram: int, top_k: int, top_p: float):
    """Decode until every row has ``limit`` tokens or is done; the advanced carry.

    carry = (cache, kv_mask_BxS, logits_BxV, pos_B, slot_B, step_B, out_BxN, done_B, stats_3), with
    per-row ``step`` (tokens in ``out``), ``pos`` (position of token ``step - 1``) and ``slot`` (its
    cache slot). Token 0 comes from the prefill's ``logits``. ``out`` needs ``k + 1`` columns of
    headroom past the last ``limit`` and the cache ``k + 1`` slots past the last token: a row may
    overshoot ``limit`` by up to ``k`` (the caller cuts). ``stats`` counts (forwards, running
    row-forwards, drafted tokens accepted).
    """
    TRACES["decode"] += 1
    model = nnx.merge(graphdef, state)
    cache, kv_mask, logits, pos, slot, step, out, done, stats = carry
    b, p_len = prompt_BxP.shape

    def first(o, s, d):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, 0)
        tok = sample_tokens(logits, keys, temperature_B, top_k, top_p)
        o = o.at[:, 0].set(tok)
        return o, jnp.ones_like(s), d | jnp.any(tok[:, None] == eos_E[None, :], axis=-1)

    out, step, done = jax.lax.cond(jnp.all(step == 0), first, lambda o, s, d: (o, s, d), out, step, done)

    def running(step, done):
        return ~done & (step < limit)

    def cond(c):
        return jnp.any(running(c[5], c[7]))

    def body(c):
        cache, kv_mask, logits, pos, slot, step, out, done, stats = c
        live_B = running(step, done)
        hist_BxL = jnp.concatenate([prompt_BxP, out], axis=1)
        draft_BxK, _ = lookup_drafts(hist_BxL, p_len + step, start_B, k=k, max_ngram=max_ngram)
        last_B = jnp.take_along_axis(out, (step - 1)[:, None], axis=1)[:, 0]
        x_BxT = jnp.concatenate([last_B[:, None], draft_BxK], axis=1)
        kv_mask = _put_rows(kv_mask, jnp.ones((b, k + 1), bool), slot)
        new_logits, cache = model.extend(x_BxT, pos[:, None] + jnp.arange(k + 1)[None, :], cache, slot, kv_mask)
        keys = jax.vmap(jax.random.fold_in)(keys_B, step)  # a row's step grows every forward: fresh keys
        n_B, tok_B = accept(new_logits, draft_BxK, temperature_B, keys, top_k=top_k, top_p=top_p)
        # Row b emits draft[:n] then tok: write all k+1 (the tail is overwritten by the next forward).
        emit_BxT = jnp.where(jnp.arange(k + 1)[None, :] < n_B[:, None], jnp.pad(draft_BxK, ((0, 0), (0, 1))),
                             tok_B[:, None])
        emit_BxT = jnp.where(jnp.arange(k + 1)[None, :] <= n_B[:, None], emit_BxT, 0)
        out = jnp.where(live_B[:, None], _put_rows(out, emit_BxT, step), out)
        valid_BxT = jnp.arange(k + 1)[None, :] <= n_B[:, None]
        hit_eos_B = jnp.any(valid_BxT & jnp.any(emit_BxT[:, :, None] == eos_E[None, None, :], axis=-1), axis=1)
        adv_B = jnp.where(live_B, n_B + 1, 0)
        stats = stats + jnp.stack([jnp.int32(1), jnp.sum(live_B.astype(jnp.int32)), jnp.sum(jnp.where(live_B, n_B, 0))])
        return (cache, kv_mask, logits, pos + adv_B, slot + adv_B, step + adv_B, out, done | (live_B & hit_eos_B),
                stats)

    return jax.lax.while_loop(cond, body, (cache, kv_mask, logits, pos, slot, step, out, done, stats))
