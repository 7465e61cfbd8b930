"""Batched generation: jitted prefill + chunked ``while_loop`` decode over a preallocated KV cache.

Prompts of different lengths are left-padded into one batch (positions start at
0 at each row's first real token; padding slots are masked out of attention).
Shapes are rounded up to buckets — batch to a power of two, prompt length to a
multiple of ``prompt_bucket``, new tokens to a multiple of ``new_bucket`` — so
one compiled prefill and one compiled decode serve every call in a bucket.
Temperatures are a per-row array (greedy where 0), so changing them never
recompiles. Stop strings are checked on the host between decode chunks.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cenas_jax.errors import UserError
from cenas_jax.llm.model import SharedPrompt
from cenas_jax.llm.sampling import TRACES as _TRACES
from cenas_jax.llm.sampling import sample_tokens
from cenas_jax.llm.speculative import decode_speculative
from cenas_jax.llm.tokenizer import encode_prompt

_MAX_EOS = 8  # EOS ids are a fixed-size array (padded with -1) so their number never recompiles


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated continuation.

    ``token_ids`` are the new tokens, with the end-of-sequence token included when
    ``finish_reason == "eos"``; ``text`` is their decoding without special tokens,
    cut before a stop string when ``finish_reason == "stop"``.
    """

    text: str
    token_ids: tuple[int, ...]
    num_tokens: int
    finish_reason: str  # "eos" | "stop" | "length" | "repeat"


def _to_rows(cache, logits_UxV, rows_B, widen):
    """The prefill of U distinct prompts widened to the batch's B rows: row b takes distinct prompt ``rows_B[b]``'s
    logits, and its cache when ``widen`` (else the cache stays one row per prompt: ``SharedPrompt``). ``rows_B``
    None: the batch's rows are the distinct prompts themselves."""
    if rows_B is None:
        return cache, logits_UxV
    if widen:
        cache = jax.tree_util.tree_map(lambda c: jnp.take(c, rows_B, axis=0), cache)
    return cache, jnp.take(logits_UxV, rows_B, axis=0)


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", "widen"))
def _prefill(graphdef, state, tokens_UxP, positions_UxP, kv_mask_UxS, rows_B, *, cache_len, widen=True):
    """Run the distinct prompts through the model; the batch's filled cache and last-position logits ``BxV``
    (``_to_rows``)."""
    _TRACES["prefill"] += 1
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(tokens_UxP.shape[0], cache_len)
    logits, cache = model.extend(tokens_UxP, positions_UxP, cache, 0, kv_mask_UxS, last_only=True)
    return _to_rows(cache, logits[:, -1, :], rows_B, widen)


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len", "widen"))
def _prefill_shared(graphdef, state, prefix_1xC, tokens_UxP, positions_UxP, kv_mask_UxS, rows_B, *, cache_len,
                    widen=True):
    """``_prefill`` for prompts that share their first C tokens: those run once (batch 1), their keys and
    values are copied to every row's slots ``[0, C)``, then each row's own tokens run from slot C."""
    _TRACES["prefill"] += 1
    model = nnx.merge(graphdef, state)
    u, c = tokens_UxP.shape[0], prefix_1xC.shape[1]
    one = model.init_cache(1, c)
    _, one = model.extend(prefix_1xC, jnp.arange(c)[None, :], one, 0, jnp.ones((1, c), bool), last_only=True)
    cache = model.init_cache(u, cache_len)

    def put_prefix(zeros, prefix):  # the prefix's slots [0, C) into every row (keys U x K x S x D, values U x K x D x S)
        return jax.lax.dynamic_update_slice(zeros, jnp.broadcast_to(prefix, (u, *prefix.shape[1:])), (0, 0, 0, 0))

    cache = type(cache)(tuple(map(put_prefix, cache.k, one.k)), tuple(map(put_prefix, cache.v, one.v)))
    logits, cache = model.extend(tokens_UxP, positions_UxP, cache, c, kv_mask_UxS, last_only=True)
    return _to_rows(cache, logits[:, -1, :], rows_B, widen)


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k", "top_p"), donate_argnames=("carry",))
def _decode(graphdef, state, carry, temperature_B, eos_E, keys_B, limit, shared=None, *, top_k, top_p):
    """Sample until ``step == limit`` tokens per row or every row is done; returns the advanced carry.

    carry = (cache, kv_mask_BxS, logits_BxV, next_pos_B, slot, step, out_BxN, done_B), where
    ``step`` tokens are already in ``out`` and ``logits`` are the prefill's last-position
    logits (token 0 is sampled from them on the first call). Each loop iteration feeds
    token ``step - 1`` at cache slot ``slot`` / position ``next_pos`` and samples token
    ``step``, so no forward pass is spent on a token that is never fed back. ``shared``: the rows'
    prompts held once (``SharedPrompt``); the cache then holds generated tokens only.
    """
    _TRACES["decode"] += 1
    model = nnx.merge(graphdef, state)

    def sample_into(step, logits, out, done):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, step)  # token `step` of each row
        tok = sample_tokens(logits, keys, temperature_B, top_k, top_p)
        out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, step))
        return out, done | jnp.any(tok[:, None] == eos_E[None, :], axis=-1)

    cache, kv_mask, logits, pos, slot, step, out, done = carry
    # Token 0 comes from the prefill logits; only small arrays pass through this cond.
    out, done = jax.lax.cond(step == 0, lambda o, d: sample_into(0, logits, o, d), lambda o, d: (o, d), out, done)
    step = jnp.maximum(step, 1)

    def cond(c):
        step, done = c[5], c[7]
        return (step < limit) & ~jnp.all(done)

    def body(c):
        cache, kv_mask, logits, pos, slot, step, out, done = c
        prev = jax.lax.dynamic_slice(out, (0, step - 1), (out.shape[0], 1))
        kv_mask = jax.lax.dynamic_update_slice(kv_mask, jnp.ones((kv_mask.shape[0], 1), bool), (0, slot))
        new_logits, cache = model.extend(prev, pos[:, None], cache, slot, kv_mask, shared=shared)
        out, done = sample_into(step, new_logits[:, 0, :], out, done)
        return cache, kv_mask, logits, pos + 1, slot + 1, step + 1, out, done

    return jax.lax.while_loop(cond, body, (cache, kv_mask, logits, pos, slot, step, out, done))


@dataclasses.dataclass(frozen=True)
class SpeculationStats:
    """What speculative decoding did in one ``generate`` call (``Sampler.last_speculation``).

    ``forwards``: verify forwards (each scores ``k + 1`` positions of every row);
    ``row_forwards``: (running row, forward) pairs; ``accepted``: drafted tokens accepted, of
    ``k * row_forwards`` drafted.
    """

    k: int
    forwards: int
    row_forwards: int
    accepted: int

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / drafted tokens."""
        return self.accepted / (self.k * self.row_forwards) if self.row_forwards else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Tokens a running row gains per forward: 1 + accepted per row-forward (1.0 is plain decoding)."""
        return 1.0 + self.accepted / self.row_forwards if self.row_forwards else 1.0


WEIGHTS_DTYPES = ("auto", "float32", "bfloat16")
_MATRIX_NAMES = ("kernel", "embedding")  # the leaves a narrower weights copy holds: projections, embedding, head


def native_bfloat16() -> bool:
    """Whether this process's default device multiplies bfloat16 matrices natively: any accelerator, or a CPU
    whose flags (Linux ``/proc/cpuinfo``) include ``avx512_bf16`` or ``amx_bf16``."""
    if jax.default_backend() != "cpu":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_weights_dtype(name: str, model_dtype: Any) -> str | None:
    """The dtype a sampler's copy of the model's matrices is kept in (``sampling.weights_dtype``), or None for
    the model's own arrays. ``auto``: bfloat16 for a float32 model where ``native_bfloat16()``, else None."""
    if name not in WEIGHTS_DTYPES:
        raise UserError(f"sampling.weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {name!r}")
    if name == "auto":
        name = "bfloat16" if jnp.dtype(model_dtype) == jnp.float32 and native_bfloat16() else "float32"
    return None if jnp.dtype(name).itemsize >= jnp.dtype(model_dtype).itemsize else name


def _is_matrix(path: tuple) -> bool:
    return any(getattr(k, "key", None) in _MATRIX_NAMES for k in path[-2:])


# ``speculative_k="auto"``: batches of at most AUTO_SPECULATION_ROWS rows draft AUTO_SPECULATIVE_K tokens a forward,
# larger ones none. Measured on this 2-core CPU (SmolLM2, bfloat16 weight copy, the search's prompts, T 0.8, top-k
# 50, top-p 0.95): one row of a full answer 25.9 tok/s plain, 44.9 with k 2 (acceptance 0.35), 44.4 with k 4; one
# delta row 21.3, 29.3 with k 2, 30.9 with k 4 (DESIGN.md §4 "Generation speed"). A forward over one row is bound
# by reading the weights, so extra positions are nearly free; at 16 rows it is bound by compute and speculation
# costs about what it gains.
AUTO_SPECULATION_ROWS = 2
AUTO_SPECULATIVE_K = 2


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


class Sampler:
    """Generate completions for a batch of prompts with a (possibly LoRA-wrapped) ``Llama``.

    The model's current parameters are read at every ``generate`` call, so a
    model fine-tuned in place samples with its new weights. ``compile_counts()``
    says how often its calls compiled the prefill and the decode.

    ``speculative_k`` > 0 switches on speculative decoding by prompt lookup (``llm/speculative.py``):
    up to ``speculative_k`` drafted tokens per row and forward, drafts found by matching the row's
    last ``lookup_ngram`` (down to 1) tokens. Greedy rows give the same tokens as without it; sampled
    rows the same distribution (other draws). ``last_speculation`` then holds the call's statistics
    (None after a call that did not speculate). ``"auto"``: only for calls of at most
    ``AUTO_SPECULATION_ROWS`` prompts, where a forward is bound by reading the weights.

    ``share_prefix`` (default on) computes prompt tokens that rows share once: rows with the same prompt (a
    search asks for several answers per parent) take one prefill row, and a token prefix common to every
    prompt runs once. ``last_prefill_rows`` / ``last_shared_prefix`` say what the last call shared.

    ``weights_dtype`` ("float32", "bfloat16" or None: the model's own) keeps a copy of the model's matrices
    (projections, embedding, head) in that dtype for sampling; a product then takes its input in that dtype and
    sums in float32, and everything else (norms, attention, the residual stream, LoRA adapters, logits) stays
    in the model's dtype. The copy is made once per base matrix and reused while the model's array is the same
    (LoRA fine-tuning trains the adapters only). Logits move by bfloat16's rounding: ``tests/test_llm_sampler_weights.py``
    states the tolerance against the float32 model and transformers.
    """

    def __init__(self, model: Any, tokenizer: Any, *, eos_token_ids: Sequence[int] | None = None,
                 prompt_bucket: int = 64, new_bucket: int = 64, stop_check_every: int = 32,
                 speculative_k: int | str = 0, lookup_ngram: int = 3, share_prefix: bool = True,
                 weights_dtype: str | None = None):
        if weights_dtype not in (None, "float32", "bfloat16"):
            raise UserError(f"weights_dtype must be 'float32', 'bfloat16' or None, got {weights_dtype!r}")
        narrow = None if weights_dtype is None else jnp.dtype(weights_dtype)
        self.weights_dtype = narrow if narrow is not None and narrow.itemsize < jnp.dtype(getattr(model, "dtype", jnp.float32)).itemsize else None
        self._narrow_copies: dict[str, tuple[Any, Any]] = {}
        if (speculative_k != "auto" and (isinstance(speculative_k, str) or speculative_k < 0)) or lookup_ngram < 1:
            raise UserError(f"speculative_k must be >= 0 or 'auto' and lookup_ngram >= 1, got {speculative_k!r}, "
                            f"{lookup_ngram}")
        self.speculative_k = speculative_k if speculative_k == "auto" else int(speculative_k)
        self.lookup_ngram = int(lookup_ngram)
        self.last_speculation: SpeculationStats | None = None
        self.share_prefix = share_prefix
        self.last_shared_prefix = 0
        self.last_prefill_rows = 0
        self.last_held_prompts = 0
        self.model = model
        self.tokenizer = tokenizer
        if eos_token_ids is None:
            ids = set(getattr(model.config, "eos_token_ids", ()))
            if getattr(tokenizer, "eos_token_id", None) is not None:
                ids.add(int(tokenizer.eos_token_id))
            eos_token_ids = sorted(ids)
        if len(eos_token_ids) > _MAX_EOS:
            raise ValueError(f"at most {_MAX_EOS} end-of-sequence ids, got {len(eos_token_ids)}")
        self.eos_token_ids = tuple(int(e) for e in eos_token_ids)
        self.prompt_bucket, self.new_bucket = prompt_bucket, new_bucket
        self.stop_check_every = stop_check_every
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (self.eos_token_ids or (0,))[0])
        self._compiles: collections.Counter[str] = collections.Counter()

    def compile_counts(self) -> dict[str, int]:
        """How many times this sampler's calls compiled (traced) the prefill and the decode: ``{"prefill": n,
        "decode": m}``, counted since the sampler was made.

        A call compiles once per new (batch bucket, prompt bucket, new-token bucket) — the prefill also per
        power-of-two bucket of distinct prompts when rows share one — and never inside one
        (temperatures, seeds and stop strings are not part of the shape), unless ``top_k`` or ``top_p`` change
        (static). A count that grows over calls expected to share a bucket shows a recompile (each one a new XLA
        compilation, paid before the call samples): compare the counts before and after such calls to spot one.
        A compilation another sampler of the same model already made is reused, and not counted here.
        """
        return {"prefill": self._compiles["prefill"], "decode": self._compiles["decode"]}

    def encode(self, prompts: Sequence[str], *, chat: bool) -> list[list[int]]:
        """Token ids of each prompt (chat template applied when ``chat``)."""
        return [encode_prompt(self.tokenizer, p, chat=chat) for p in prompts]

    def generate(self, prompts: Sequence[str], *, chat: bool, max_new_tokens: int = 256,
                 temperature: float | Sequence[float] = 0.0, top_k: int = 0, top_p: float = 1.0,
                 stop: Sequence[str] = (), seed: int | Sequence[int] = 0, ignore_eos: bool = False,
                 max_repeat_lines: int | None = None, on_progress=None) -> list[Completion]:
        """One ``Completion`` per prompt; ``temperature`` 0 (for a row or all) means greedy.

        ``seed``: one per prompt (row i's tokens are drawn with keys from ``seed[i]`` only), or
        one for the call (row i then draws from ``fold_in(key(seed), i)``).

        ``ignore_eos`` keeps generating past end-of-sequence (benchmarks need exact lengths).
        ``max_repeat_lines``: end a row (finish reason ``"repeat"``) once its last that many
        lines are one and the same non-blank line, a degenerate loop small models fall into
        (checked every ``stop_check_every`` tokens; the text keeps one copy of the line).
        ``on_progress(rows_done, step, tokens)`` is called every ``stop_check_every`` tokens
        (``tokens``: generated so far, rows that ended counted to the check where they ended).
        """
        return self.generate_ids(self.encode(prompts, chat=chat), max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, top_p=top_p, stop=stop,
                                 seed=seed, ignore_eos=ignore_eos, max_repeat_lines=max_repeat_lines,
                                 on_progress=on_progress)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int = 256,
                     temperature: float | Sequence[float] = 0.0, top_k: int = 0, top_p: float = 1.0,
                     stop: Sequence[str] = (), seed: int | Sequence[int] = 0, ignore_eos: bool = False,
                     max_repeat_lines: int | None = None, on_progress=None) -> list[Completion]:
        """``generate`` for prompts already tokenised."""
        if max_repeat_lines is not None and max_repeat_lines < 2:
            raise UserError(f"max_repeat_lines must be >= 2 or None, got {max_repeat_lines}")
        n = len(prompt_ids)
        if n == 0:
            return []
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if any(len(p) == 0 for p in prompt_ids):
            raise UserError("a prompt encodes to zero tokens; give at least one token")
        temps = np.broadcast_to(np.asarray(temperature, np.float32), (n,)).copy()
        if np.any(temps < 0) or not np.all(np.isfinite(temps)):
            raise UserError(f"temperature must be finite and >= 0, got {temperature}")
        if isinstance(seed, (int, np.integer)):
            seeds = None
        else:
            seeds = [int(x) for x in seed]
            if len(seeds) != n:
                raise UserError(f"seed: one per prompt ({n}), got {len(seeds)}")
            if any(not 0 <= x < 2**32 for x in seeds):
                raise UserError("seed: per-prompt seeds must lie in [0, 2**32)")
        if top_k < 0 or not 0 < top_p <= 1:
            raise UserError(f"top_k must be >= 0 and top_p in (0, 1], got top_k={top_k}, top_p={top_p}")

        b = 1 << max(0, math.ceil(math.log2(n)))
        p_len = _round_up(max(len(p) for p in prompt_ids), self.prompt_bucket)
        n_new = _round_up(max_new_tokens, self.new_bucket)
        spec = self.speculative_k_for(n)
        self.last_speculation = None
        headroom = spec + 1 if spec else 0  # a speculative row may run k tokens past its limit
        # Rows with the same prompt (a search draws several answers per parent) share one prefill row.
        distinct: dict[tuple[int, ...], int] = {}
        rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids]
        unique = [list(p) for p in distinct] if self.share_prefix and len(distinct) < n else [list(p) for p in prompt_ids]
        shared = self._shared_prefix(unique)
        # Cache slots of the prompts: left-padded rows, or the shared prefix then the left-padded rest.
        slots = shared + _round_up(max(len(p) for p in prompt_ids) - shared, self.prompt_bucket) if shared else p_len
        cache_len = slots + n_new + headroom
        self.last_shared_prefix = shared
        self.last_prefill_rows = len(unique)
        max_pos = self.model.config.max_position_embeddings
        if max(len(p) for p in prompt_ids) + max_new_tokens > max_pos:
            raise UserError(f"prompt + max_new_tokens exceeds the model's {max_pos} positions")

        tokens = np.full((b, p_len), self.pad_id, np.int32)  # left-padded prompts (what drafts are looked up in)
        for i, ids in enumerate(prompt_ids):
            tokens[i, p_len - len(ids):] = ids
        kv_mask = self._prompt_layout(prompt_ids, b, shared, slots, cache_len)[2]
        if len(unique) < n:
            u = 1 << max(0, math.ceil(math.log2(len(unique))))
            fed, positions, kv_mask_u = self._prompt_layout(unique, u, shared, slots, cache_len)
            rows_b = jnp.asarray(rows + [0] * (b - n), jnp.int32)  # filler rows copy prompt 0 (never read)
        else:
            fed, positions, kv_mask_u = self._prompt_layout(prompt_ids, b, shared, slots, cache_len)
            rows_b = None
        temps_b = np.zeros((b,), np.float32)
        temps_b[:n] = temps
        eos = np.full((_MAX_EOS,), -1, np.int32)
        if not ignore_eos:
            eos[: len(self.eos_token_ids)] = self.eos_token_ids
        done = np.arange(b) >= n
        next_pos = np.array([len(p) for p in prompt_ids] + [1] * (b - n), np.int32)

        graphdef, state = self._split()
        # Held prompts: when rows share prompts (at least 2 rows a prompt on average) and decode one token a
        # forward, each prompt's keys and values stay one copy, read once per step for all its rows.
        hold = rows_b is not None and not spec and 2 * len(unique) <= n
        kw = dict(cache_len=slots if hold else cache_len, widen=not hold)
        kv_mask_u = kv_mask_u[:, :kw["cache_len"]]
        if shared:
            cache, logits = self._counted("prefill", _prefill_shared, graphdef, state, jnp.asarray([unique[0][:shared]], jnp.int32),
                                          jnp.asarray(fed), jnp.asarray(positions), jnp.asarray(kv_mask_u), rows_b, **kw)
        else:
            cache, logits = self._counted("prefill", _prefill, graphdef, state, jnp.asarray(fed), jnp.asarray(positions),
                                          jnp.asarray(kv_mask_u), rows_b, **kw)
        held = None
        self.last_held_prompts = len(unique) if hold else 0
        if hold:
            held = self._hold(cache, kv_mask_u, rows, b)
            cache = self.model.init_cache(b, n_new)  # the rows' own slots: generated tokens only
            kv_mask, slots = np.zeros((b, n_new), bool), 0
        if spec:
            carry = (cache, jnp.asarray(kv_mask), logits, jnp.asarray(next_pos), jnp.full((b,), slots, jnp.int32),
                     jnp.zeros((b,), jnp.int32), jnp.zeros((b, n_new + headroom), jnp.int32), jnp.asarray(done),
                     jnp.zeros((3,), jnp.int32))
            starts = jnp.asarray([p_len - len(p) for p in prompt_ids] + [p_len - 1] * (b - n), jnp.int32)
        else:
            carry = (cache, jnp.asarray(kv_mask), logits, jnp.asarray(next_pos), jnp.int32(slots), jnp.int32(0),
                     jnp.zeros((b, n_new), jnp.int32), jnp.asarray(done))
        if seeds is None:
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), jnp.arange(b))
        else:  # filler rows are never read; they get key 0
            keys = jax.vmap(jax.random.key)(jnp.asarray(seeds + [0] * (b - n), jnp.uint32))
        chunk = self.stop_check_every if (stop or max_repeat_lines or on_progress) else max_new_tokens
        stopped: dict[int, tuple[str, list[int], str]] = {}
        step = 0
        ended_at = np.full((n,), -1, np.int64)  # the step of the check at which each row was seen done
        while True:
            limit = min(step + chunk, max_new_tokens)
            if spec:
                carry = self._counted("decode", decode_speculative, graphdef, state, carry, jnp.asarray(tokens), starts, jnp.asarray(temps_b),
                                           jnp.asarray(eos), keys, jnp.int32(limit), k=spec,
                                           max_ngram=self.lookup_ngram, top_k=int(top_k), top_p=float(top_p))
                rows_step = np.minimum(np.asarray(carry[5]), max_new_tokens)
                step = limit  # every running row holds at least ``limit`` tokens now
            else:
                carry = self._counted("decode", _decode, graphdef, state, carry, jnp.asarray(temps_b), jnp.asarray(eos), keys,
                                      jnp.int32(limit), held, top_k=int(top_k), top_p=float(top_p))
                step = int(carry[5])
                rows_step = np.full((b,), step)
            done_now = np.asarray(carry[7]).copy()
            if stop or max_repeat_lines:
                out = np.asarray(carry[6])
                for i in range(n):
                    if i in stopped:  # rows ended by EOS are checked too: a stop string may precede it
                        continue
                    ids = out[i, :rows_step[i]].tolist()
                    hit = self._find_stop(ids, stop, ignore_eos) if stop else None
                    if hit is None and max_repeat_lines and not done_now[i]:
                        hit = self._find_repeat(ids, max_repeat_lines)
                    if hit is not None:
                        stopped[i] = hit
                        done_now[i] = True
                if stopped:
                    carry = carry[:7] + (jnp.asarray(done_now),) + carry[8:]
            if on_progress is not None:
                ended_at[(ended_at < 0) & (done_now[:n] | (step >= max_new_tokens))] = step  # the limit ends every row
                running = ended_at < 0
                made = rows_step[:n] if spec else np.where(running, step, ended_at)
                on_progress(int((~running).sum()), step, int(made.sum()))
            if step >= max_new_tokens or done_now.all():
                break
        out = np.asarray(carry[6])
        if spec:
            forwards, row_forwards, accepted = (int(x) for x in np.asarray(carry[8]))
            self.last_speculation = SpeculationStats(spec, forwards, row_forwards, accepted)
        return [self._finish(out[i, :rows_step[i]].tolist(), stopped.get(i), ignore_eos) for i in range(n)]

    def speculative_k_for(self, rows: int) -> int:
        """Drafted tokens a forward for a call of ``rows`` prompts (``speculative_k``; "auto": ``AUTO_SPECULATIVE_K``
        for at most ``AUTO_SPECULATION_ROWS`` rows, else 0)."""
        if self.speculative_k == "auto":
            return AUTO_SPECULATIVE_K if rows <= AUTO_SPECULATION_ROWS else 0
        return self.speculative_k

    def _split(self) -> tuple[Any, Any]:
        """``nnx.split(model)``, its matrices swapped for the ``weights_dtype`` copies (made when missing or stale)."""
        graphdef, state = nnx.split(self.model)
        if self.weights_dtype is None:
            return graphdef, state
        copies, narrow = self._narrow_copies, self.weights_dtype

        def swap(path, x):
            if not _is_matrix(path) or x.dtype == narrow:
                return x
            key = jax.tree_util.keystr(path)
            hit = copies.get(key)
            if hit is None or hit[0] is not x:
                hit = copies[key] = (x, x.astype(narrow))
            return hit[1]

        return graphdef, jax.tree_util.tree_map_with_path(swap, state)

    @staticmethod
    def _hold(cache: Any, mask_UxP: np.ndarray, rows: Sequence[int], b: int) -> SharedPrompt:
        """The prefilled distinct prompts as a ``SharedPrompt`` for the batch's ``b`` rows (``rows[i]``: row i's
        prompt; rows past ``len(rows)`` are filler and read prompt 0)."""
        u = mask_UxP.shape[0]
        counts = collections.Counter(rows)
        r = 1 << max(0, math.ceil(math.log2(max(counts.values()))))
        grid = np.zeros((u, r), np.int32)
        prompt_b, cell_b = np.zeros((b,), np.int32), np.zeros((b,), np.int32)
        used = collections.Counter()
        for i, p in enumerate(rows):
            grid[p, used[p]], prompt_b[i], cell_b[i] = i, p, used[p]
            used[p] += 1
        return SharedPrompt(cache.k, cache.v, jnp.asarray(mask_UxP), jnp.asarray(grid), jnp.asarray(prompt_b),
                            jnp.asarray(cell_b))

    def _prompt_layout(self, prompt_ids: Sequence[Sequence[int]], rows: int, shared: int, slots: int,
                       cache_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the prefill feeds for ``prompt_ids`` in a batch of ``rows``: each prompt's tokens from ``shared`` on,
        left-padded to end at slot ``slots`` (``RxP``), their positions, and the cache mask ``RxS`` (True: a slot
        holding a real token; the shared prefix's slots for every row)."""
        fed = np.full((rows, slots - shared), self.pad_id, np.int32)
        positions = np.zeros((rows, slots - shared), np.int32)
        kv_mask = np.zeros((rows, cache_len), bool)
        kv_mask[:, :shared] = True
        for i, ids in enumerate(prompt_ids):
            start = slots - len(ids) + shared
            fed[i, start - shared:] = ids[shared:]
            positions[i, start - shared:] = np.arange(shared, len(ids))
            kv_mask[i, start:slots] = True
        for i in range(len(prompt_ids), rows):  # filler rows: one real token so attention is well defined
            kv_mask[i, slots - 1] = True
        return fed, positions, kv_mask

    def _shared_prefix(self, prompt_ids: Sequence[Sequence[int]]) -> int:
        """Tokens at the start of every prompt that the prefill computes once (0: none): the common
        prefix, cut to whole prompt buckets and leaving every row at least one token of its own."""
        if not self.share_prefix or len(prompt_ids) < 2:
            return 0
        first, shortest = prompt_ids[0], min(len(p) for p in prompt_ids)
        common = 0
        while common < shortest - 1 and all(p[common] == first[common] for p in prompt_ids):
            common += 1
        shared = common // self.prompt_bucket * self.prompt_bucket
        return shared

    def _counted(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)``, a jitted function that counts its traces in ``_TRACES[name]``; a trace it caused
        is added to this sampler's ``compile_counts``."""
        before = _TRACES[name]
        try:
            return fn(*args, **kw)
        finally:
            self._compiles[name] += _TRACES[name] - before

    def _decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _find_repeat(self, ids: list[int], n: int) -> tuple[str, list[int], str] | None:
        """(text up to the first copy of a line repeated ``n`` times at the end, its tokens, "repeat") or None."""
        text = self._decode_text(ids)
        lines = text.split("\n")[:-1]  # complete lines only: the last one may still be growing
        tail = lines[-n:]
        if len(tail) < n or not tail[0].strip() or any(x != tail[0] for x in tail):
            return None
        start = len(lines) - n
        while start > 0 and lines[start - 1] == tail[0]:  # back to the first line of the run
            start -= 1
        keep = "\n".join(lines[: start + 1]) + "\n"
        return keep, self._shortest_prefix(ids, lambda text: len(text) >= len(keep)), "repeat"

    def _shortest_prefix(self, ids: list[int], done: Callable[[str], bool]) -> list[int]:
        """The shortest ``ids[:k]`` (k >= 1) whose decoded text satisfies ``done`` (monotone in k)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if done(self._decode_text(ids[:mid])):
                hi = mid
            else:
                lo = mid + 1
        return ids[:lo]

    def _find_stop(self, ids: list[int], stop: Sequence[str], ignore_eos: bool = False
                   ) -> tuple[str, list[int], str] | None:
        """(text cut before the first stop string, the shortest token prefix containing it) or None."""
        eos = set() if ignore_eos else set(self.eos_token_ids)
        cut = next((k for k, t in enumerate(ids) if t in eos), len(ids))
        ids = ids[:cut]
        text = self._decode_text(ids)
        at = min((text.find(s) for s in stop if s and s in text), default=-1)
        if at < 0:
            return None
        kept = self._shortest_prefix(ids, lambda t: any(s and s in t for s in stop))
        return text[:at], kept, "stop"

    def _finish(self, ids: list[int], stopped: tuple[str, list[int], str] | None, ignore_eos: bool) -> Completion:
        if stopped is not None:
            text, kept, reason = stopped
            return Completion(text, tuple(kept), len(kept), reason)
        if not ignore_eos:
            eos = set(self.eos_token_ids)
            for k, t in enumerate(ids):
                if t in eos:
                    kept = ids[: k + 1]
                    return Completion(self._decode_text(ids[:k]), tuple(kept), len(kept), "eos")
        return Completion(self._decode_text(ids), tuple(ids), len(ids), "length")
