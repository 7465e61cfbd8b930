"""The CE update (DESIGN.md §1 step 7): fine-tune LoRA adapters on (prompt, completion) pairs.

Loss, with ``normalization="sequence"`` (the default, Theorem 1 of the paper):

    L(theta) = -(1/|S|) sum_{a in S} log p_theta(a | prompt(a)),

the log-likelihood of the whole completion (prompt tokens masked), averaged over
programs. ``normalization="token_mean"`` is the usual SFT loss, the mean over completion
tokens, which re-weights programs by their length; it is an option only.

Only ``nnx.LoRAParam`` variables are trained (``nnx.Optimizer(..., wrt=nnx.LoRAParam)``):
AdamW with linear warm-up and cosine decay, global-norm clipping, length bucketing (few
shapes compile) and gradient accumulation over micro-batches inside one jitted step.
Each ``finetune`` call starts from a fresh optimiser state (the CE update resets it every
cycle) while the adapters carry over in the model.

The loss never holds B x T x V logits (``gathered_nll``): the output head runs only at the completion
positions (gathered first), in chunks, and each chunk computes its gradient with respect to its hidden
states while its logits exist, so the backward pass neither stores nor recomputes logits (measured:
DESIGN.md §4 "Fine-tuning speed").

Frozen-layer cache: when adapters sit only in the top layers (``lora.layers``) and a call sees an
example more than once (epochs > 1), the layers below the first adapted one compute the same thing
every time. ``finetune`` then runs them once per example (``Llama.layer_inputs``), keeps their output,
and trains on the rest of the stack (``Llama.logits_from``): the same loss and gradients, in less time
(measured: DESIGN.md §4).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cenas_jax.config import FinetuneConfig
from cenas_jax.errors import UserError
from cenas_jax.llm.lora import DropoutKey, with_dropout_keys
from cenas_jax.progress import progress_bar

Pair = tuple[Sequence[int], Sequence[int]]

# Padded lengths are taken from this ladder (x1, x1.5 per octave: at most a third is padding),
# so a run of mixed lengths compiles a handful of shapes.
_MIN_BUCKET = 16
# Positions per chunk of the LM head in the loss (``gathered_nll``): one chunk's logits (256 x 49,152
# float32 for SmolLM2, 50 MB) are the largest array of the loss, and at most 255 positions of a
# micro-batch are computed for nothing. Measured (head + loss + gradient, 768 loss positions of
# 4 x 256, A/B interleaved under load): chunks of 128 took 0.90 s, 192 0.81 s, 256 0.53 s, 384
# 0.50 s; full 4 x 256 x V logits 1.14 s.
LOSS_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What one ``finetune`` call did.

    ``losses``: the loss of every optimiser step (before its update); ``tokens``: real
    (non-padding) tokens fed to the model; ``seconds``: wall time including compilation;
    ``truncated``: how many pairs were cut to ``max_seq_len`` tokens; ``learning_rates``:
    the rate used at each step; ``grad_norms``: the global gradient norm of each step
    (before clipping); ``optimizer``: the final optimiser (for checkpoints).
    """

    losses: list[float]
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    truncated: int
    learning_rates: list[float] = dataclasses.field(default_factory=list)
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    cached_layers: int = 0  # frozen layers run once per example (0: no cache)
    optimizer: nnx.Optimizer | None = dataclasses.field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------- batching


def bucket_length(n: int, max_len: int) -> int:
    """The padded length for a row of ``n`` model inputs: the next rung of 16, 24, 32, 48, 64, ...

    Capped at ``max_len``.
    """
    b = _MIN_BUCKET
    while b < n:
        b = b * 3 // 2 if (b & (b - 1)) == 0 else (b // 3) * 4
    return min(b, max_len)


@dataclasses.dataclass(frozen=True)
class _Example:
    ids: np.ndarray  # prompt + completion, int32
    n_prompt: int


def encode_pairs(pairs: Sequence[Pair], max_seq_len: int) -> tuple[list[_Example], int]:
    """Concatenate each pair, cutting its end to ``max_seq_len`` tokens; returns (examples, #truncated)."""
    out, truncated = [], 0
    for i, (prompt, completion) in enumerate(pairs):
        p = np.asarray(prompt, dtype=np.int64).reshape(-1)
        c = np.asarray(completion, dtype=np.int64).reshape(-1)
        if p.size == 0:
            raise UserError(f"pair {i}: the prompt is empty; it needs at least one token (e.g. BOS)")
        if c.size == 0:
            raise UserError(f"pair {i}: the completion is empty; include at least the end-of-sequence token")
        if p.size >= max_seq_len:
            raise UserError(
                f"pair {i}: the prompt has {p.size} tokens, >= finetune.max_seq_len={max_seq_len}, "
                "so no completion token would be trained; raise max_seq_len or shorten the prompt"
            )
        ids = np.concatenate([p, c])
        if ids.size > max_seq_len:
            ids = ids[:max_seq_len]
            truncated += 1
        out.append(_Example(ids.astype(np.int32), int(p.size)))
    return out, truncated


def _rows(examples: Sequence[_Example | None], width: int,
          hidden: Sequence[np.ndarray | None] | None = None) -> dict[str, np.ndarray]:
    """Right-padded next-token rows; ``None`` is a padding row of weight 0.

    tokens/targets/mask: (B, width); weight: (B,). ``mask[j]`` is 1 where ``targets[j]``
    is a completion token. With ``hidden`` (each example's cached frozen-layer output,
    (n, E)), also ``hidden``: (B, width, E).
    """
    b = len(examples)
    tokens = np.zeros((b, width), np.int32)
    targets = np.zeros((b, width), np.int32)
    mask = np.zeros((b, width), np.float32)
    weight = np.zeros((b,), np.float32)
    h = None
    if hidden is not None:
        e = next(x.shape[-1] for x in hidden if x is not None)
        h = np.zeros((b, width, e), np.float32)
    for r, ex in enumerate(examples):
        if ex is None:
            continue
        n = ex.ids.size - 1
        tokens[r, :n] = ex.ids[:-1]
        targets[r, :n] = ex.ids[1:]
        mask[r, ex.n_prompt - 1 : n] = 1.0
        weight[r] = 1.0
        if h is not None:
            h[r, :n] = hidden[r]
    out = {"tokens": tokens, "targets": targets, "mask": mask, "weight": weight}
    if h is not None:
        out["hidden"] = h
    return out


def _step_batches(examples: Sequence[_Example], cfg: FinetuneConfig, num_steps: int, rng: np.random.Generator,
                  hidden: Sequence[np.ndarray] | None = None):
    """Yield ``num_steps`` step batches of shape (grad_accum, micro, T), length-bucketed.

    Each epoch: shuffle, sort pools of 16 batches by length, cut into batches, shuffle the
    batches. A short last batch is filled with weight-0 rows so shapes stay fixed.
    """
    n, bs = len(examples), cfg.batch_size
    micro = bs // cfg.grad_accum
    produced = 0
    while produced < num_steps:
        order = rng.permutation(n)
        pool = 16 * bs
        batches = []
        for start in range(0, n, pool):
            chunk = sorted(order[start : start + pool], key=lambda k: examples[k].ids.size)
            batches += [chunk[i : i + bs] for i in range(0, len(chunk), bs)]
        for bi in rng.permutation(len(batches)):
            idx = batches[bi]
            rows = [examples[k] for k in idx] + [None] * (bs - len(idx))
            width = bucket_length(max(examples[k].ids.size - 1 for k in idx), cfg.max_seq_len)
            h_rows = None if hidden is None else [hidden[k] for k in idx] + [None] * (bs - len(idx))
            arrays = _rows(rows, width, h_rows)
            yield {k: v.reshape((cfg.grad_accum, micro) + v.shape[1:]) for k, v in arrays.items()}
            produced += 1
            if produced == num_steps:
                return


def num_steps_for(num_pairs: int, cfg: FinetuneConfig) -> int:
    """Optimiser steps of one call: ceil(epochs x batches per epoch), capped by ``max_steps``."""
    steps = max(1, math.ceil(cfg.epochs * math.ceil(num_pairs / cfg.batch_size)))
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def learning_rate_schedule(cfg: FinetuneConfig, num_steps: int) -> optax.Schedule:
    """Linear warm-up to ``cfg.learning_rate`` then cosine decay towards 0; argument: step 0..num_steps-1.

    Step i uses optax's warm-up-cosine at i + 1, so neither the first step (warm-up from 0)
    nor the last (cosine end) has a zero rate.
    """
    warmup = min(cfg.warmup_steps, num_steps)
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=num_steps + 1,
        end_value=0.0,
    )
    return lambda step: base(step + 1)


@functools.cache
def _transform(weight_decay: float, max_grad_norm: float | None) -> optax.GradientTransformation:
    """Clip + AdamW with the rate as a hyper-parameter set per step; cached so jit caches hit across calls."""
    adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=weight_decay)
    clip = optax.identity() if max_grad_norm is None or max_grad_norm <= 0 else optax.clip_by_global_norm(max_grad_norm)
    # Always a chain, so the AdamW state sits at index 1 either way.
    return optax.chain(clip, adamw)


def make_optimizer(model: nnx.Module, cfg: FinetuneConfig) -> nnx.Optimizer:
    """A fresh optimiser over the model's ``nnx.LoRAParam`` variables only."""
    if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise UserError("the model has no LoRA adapters to fine-tune; call apply_lora(model, cfg.lora, rngs) first")
    return nnx.Optimizer(model, _transform(float(cfg.weight_decay), cfg.max_grad_norm), wrt=nnx.LoRAParam)


def _hyperparams(optimizer: nnx.Optimizer) -> dict:
    """The injected AdamW hyper-parameters (``learning_rate``, ...) inside the optimiser state."""
    return optimizer.opt_state[1].hyperparams


# ----------------------------------------------------------------------------- loss


def gathered_nll(head, h_BxTxE: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array,
                 chunk: int = LOSS_CHUNK) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-log p(target) at the positions where ``mask_BxT > 0``, without materialising B x T x V logits.

    ``head`` maps final-norm hidden states ``(C, E)`` to logits ``(C, V)`` (``Llama.head``); its
    weights are frozen (differentiating through them is refused). The masked positions are gathered
    first (in row-major order) and the head runs over them in chunks of ``chunk`` positions
    (``jax.lax.map``); chunks past the last masked position are skipped (``lax.cond``), so prompt
    and padding positions cost no logits. Under differentiation each chunk also computes its
    gradient with respect to its hidden states while its logits exist (``_head_nll``), so the
    backward pass neither keeps nor recomputes logits.

    Returns ``(nll_P, index_P, valid_P)`` with P = B*T rounded up to a multiple of ``chunk``: the
    negative log-likelihood of each gathered position, its flat index into B*T, and whether it is
    a masked position (the others are filler: their nll is finite and to be ignored).
    """
    b, t, e = h_BxTxE.shape
    n = b * t
    n_chunks = -(-n // chunk)
    p = n_chunks * chunk
    take_N = mask_BxT.reshape(n) > 0
    count = jnp.sum(take_N)
    # Masked positions first, each group in its original order; filler past N points at position 0.
    index_P = jnp.pad(jnp.argsort(~take_N, stable=True).astype(jnp.int32), (0, p - n))
    valid_P = jnp.arange(p) < count
    h_KxCxE = jnp.take(h_BxTxE.reshape(n, e), index_P, axis=0).reshape(n_chunks, chunk, e)
    t_KxC = jnp.take(targets_BxT.reshape(n), index_P, axis=0).reshape(n_chunks, chunk)
    # The head's weights become explicit arguments, so that differentiating them is detected (refused).
    head_fn, weights = jax.closure_convert(head, h_KxCxE[0])
    nll_KxC = _head_nll(head_fn, h_KxCxE, t_KxC, count, *weights)
    return nll_KxC.reshape(p), index_P, valid_P


def _head_chunks(head_fn, weights, h_KxCxE, t_KxC, count, with_grad: bool):
    """Per chunk of positions: nll (C,) and, ``with_grad``, d nll / d h (C, E); chunks from ``count`` on are zeros."""
    k, c, e = h_KxCxE.shape

    def compute(h_CxE, t_C):
        logits_CxV, head_vjp = jax.vjp(lambda x: head_fn(x, *weights).astype(jnp.float32), h_CxE)
        lse_C = jax.nn.logsumexp(logits_CxV, axis=-1)
        rows = jnp.arange(c)
        nll_C = lse_C - logits_CxV[rows, t_C]
        if not with_grad:
            return nll_C
        # d nll / d logits = softmax - one_hot(target)
        dlogits_CxV = jnp.exp(logits_CxV - lse_C[:, None]).at[rows, t_C].add(-1.0)
        return nll_C, head_vjp(dlogits_CxV)[0]

    def skip(h_CxE, t_C):
        zeros = jnp.zeros((c,), jnp.float32)
        return (zeros, jnp.zeros_like(h_CxE)) if with_grad else zeros

    def one(xs):
        h_CxE, t_C, start = xs
        return jax.lax.cond(start < count, compute, skip, h_CxE, t_C)

    return jax.lax.map(one, (h_KxCxE, t_KxC, jnp.arange(k, dtype=jnp.int32) * c))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _head_nll(head_fn, h_KxCxE, t_KxC, count, *weights):
    return _head_chunks(head_fn, weights, h_KxCxE, t_KxC, count, with_grad=False)


def _head_nll_fwd(head_fn, h_KxCxE, t_KxC, count, *weights):
    if any(w.perturbed for w in weights):
        raise ValueError("gathered_nll: the output head is frozen here; its weights cannot be differentiated "
                         "(the fine-tuning trains LoRA adapters of the decoder layers only)")
    weights = tuple(w.value for w in weights)
    nll_KxC, dh_KxCxE = _head_chunks(head_fn, weights, h_KxCxE.value, t_KxC.value, count.value, with_grad=True)
    return nll_KxC, (dh_KxCxE, (None,) * len(weights))  # (None: no cotangent for each weight)


def _head_nll_bwd(head_fn, res, g_KxC):
    dh_KxCxE, no_weight_grads = res
    return ((g_KxC[..., None] * dh_KxCxE).astype(dh_KxCxE.dtype), None, None, *no_weight_grads)


_head_nll.defvjp(_head_nll_fwd, _head_nll_bwd, symbolic_zeros=True)


def completion_nll(model: nnx.Module, tokens_BxT: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Per-row negative log-likelihood of the masked targets: (B,), nats, summed over tokens."""
    return _row_nll(model.head, model.hidden_states(tokens_BxT), targets_BxT, mask_BxT)


def _row_nll(head, h_BxTxE, targets_BxT, mask_BxT):
    """sum_t mask[b, t] * -log p(targets[b, t]) per row b, through the chunked head (``gathered_nll``)."""
    b, t = targets_BxT.shape
    nll_P, index_P, valid_P = gathered_nll(head, h_BxTxE, targets_BxT, mask_BxT)
    terms_P = jnp.where(valid_P, nll_P * jnp.take(mask_BxT.reshape(-1), index_P), 0.0)
    return jax.ops.segment_sum(terms_P, index_P // t, num_segments=b)


def _row_coefficients(batch: dict, token_mean: jax.Array) -> jax.Array:
    """Weights c (A, M) so that the step loss is sum c * row_nll over the whole step.

    sequence: c = w / #rows (mean over programs); token_mean: c = w / #completion tokens.
    ``token_mean`` is a traced bool so both normalisations share one compilation.
    """
    w = batch["weight"]
    rows = jnp.sum(w)
    tokens = jnp.sum(batch["mask"] * w[..., None])
    return w / jnp.maximum(jnp.where(token_mean, tokens, rows), 1.0)


def _accumulated_loss_and_grads(model, batch, token_mean, key, start_layer=0):
    """Loss and LoRA gradients of one step over (grad_accum, micro, T) rows, micro-batch by micro-batch.

    Returns (loss, grads): the gradient equals that of the whole step as one batch.
    ``start_layer`` > 0: the batch carries ``hidden``, the cached input of that layer.
    """
    coef_AxM = _row_coefficients(batch, token_mean)
    lora_def, lora_params, dropout_keys, rest = nnx.split(model, nnx.LoRAParam, DropoutKey, ...)

    def micro_loss(params, keys, micro_batch, coef_M):
        m = nnx.merge(lora_def, params, keys, rest)
        if start_layer:
            h = m.hidden_from(micro_batch["hidden"], start_layer)
        else:
            h = m.hidden_states(micro_batch["tokens"])
        # The loss positions only, through the chunked head: sum over rows of coef * row nll.
        nll_P, index_P, valid_P = gathered_nll(m.head, h, micro_batch["targets"], micro_batch["mask"])
        w_P = jnp.take((coef_M[:, None] * micro_batch["mask"]).reshape(-1), index_P)
        return jnp.sum(jnp.where(valid_P, w_P * nll_P, 0.0))

    grad_fn = jax.value_and_grad(micro_loss)

    def accumulate(carry, xs):
        loss_sum, grad_sum = carry
        micro_batch, coef_M, idx = xs
        # Fresh dropout masks for every micro-batch and adapter (no-op without dropout).
        keys = with_dropout_keys(dropout_keys, jax.random.fold_in(key, idx))
        loss, grads = grad_fn(lora_params, keys, micro_batch, coef_M)
        return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, lora_params)
    micro_batches = {k: batch[k] for k in ("hidden" if start_layer else "tokens", "targets", "mask")}
    steps = jnp.arange(coef_AxM.shape[0])
    (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros), (micro_batches, coef_AxM, steps))
    return loss, grads


def _train_step(graphdef, start_layer, train_state, frozen_state, batch, lr, key, token_mean):
    """One optimiser step over (grad_accum, micro, T) rows; returns (new train state, loss, grad norm)."""
    model, optimizer = nnx.merge(graphdef, train_state, frozen_state)
    _hyperparams(optimizer)["learning_rate"][...] = lr
    loss, grads = _accumulated_loss_and_grads(model, batch, token_mean, key, start_layer)
    optimizer.update(model, grads)
    new_state = nnx.state((model, optimizer), nnx.Any(nnx.LoRAParam, nnx.OptState))
    return new_state, loss, optax.tree.norm(grads)


@functools.cache
def _compiled_train_step(graphdef, start_layer=0):
    # One jitted function per model structure: hashing the graph definition once per call, not per step.
    return jax.jit(functools.partial(_train_step, graphdef, start_layer), donate_argnums=(0,))


@functools.cache
def _compiled_prefix(graphdef, layer):
    return jax.jit(lambda state, tokens: nnx.merge(graphdef, state).layer_inputs(tokens, layer))


def first_adapted_layer(model: nnx.Module) -> int:
    """Index of the lowest decoder layer holding LoRA adapters (0 when the embedding or every layer could)."""
    layers = list(getattr(model, "layers", []))
    for i, layer in enumerate(layers):
        if jax.tree.leaves(nnx.state(layer, nnx.LoRAParam)):
            return i
    return 0


def _frozen_outputs(model: nnx.Module, examples: Sequence[_Example], layer: int, max_len: int,
                    progress: bool) -> list[np.ndarray]:
    """Each example's input to ``layer`` (n, E), computed once with the frozen layers below it."""
    graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
    fn = _compiled_prefix(graphdef, layer)
    it = examples
    if progress:
        it = progress_bar(examples, desc=f"finetune: layers 0-{layer - 1} once", unit="ex")
    out = []
    for ex in it:
        n = ex.ids.size - 1
        row = np.zeros((1, bucket_length(n, max_len)), np.int32)
        row[0, :n] = ex.ids[:-1]
        out.append(np.asarray(fn(state, row))[0, :n].astype(np.float32))
    return out


# ----------------------------------------------------------------------------- public API


def finetune(
    model: nnx.Module,
    pairs: Sequence[Pair],
    cfg: FinetuneConfig,
    *,
    optimizer: nnx.Optimizer | None = None,
    progress: bool = False,
    cache_frozen: bool | None = None,
) -> FinetuneResult:
    """Fine-tune the LoRA adapters of ``model`` in place on (prompt_ids, completion_ids) pairs.

    ``completion_ids`` include the end-of-sequence token. ``optimizer``: continue from this
    optimiser (e.g. restored from a checkpoint); default a fresh one. Base weights are not
    touched. Deterministic for ``cfg.seed``. ``cache_frozen``: run the frozen layers below
    the first adapted one once per example (module docstring); None (default) does so when
    there are such layers and some example is seen twice.
    """
    if len(pairs) == 0:
        raise UserError("finetune: no (prompt, completion) pairs to train on")
    examples, truncated = encode_pairs(pairs, cfg.max_seq_len)
    num_steps = num_steps_for(len(examples), cfg)
    schedule = learning_rate_schedule(cfg, num_steps)
    optimizer = make_optimizer(model, cfg) if optimizer is None else optimizer
    start_layer = first_adapted_layer(model)
    if cache_frozen is None:
        cache_frozen = start_layer > 0 and num_steps > math.ceil(len(examples) / cfg.batch_size)  # a 2nd pass
    if not cache_frozen:
        start_layer = 0

    # Training mode (adapter dropout on) lives in a view that shares the model's arrays.
    train_view = nnx.view(model, deterministic=False, raise_if_not_found=False)
    graphdef, train_state, frozen_state = nnx.split((train_view, optimizer), nnx.Any(nnx.LoRAParam, nnx.OptState), ...)
    # Donation deletes the buffers it is given; adapters and optimiser state are small, so donate
    # private copies and never invalidate arrays the caller (or a clone of the model) still holds.
    train_state = jax.tree.map(jnp.copy, train_state)
    step_fn = _compiled_train_step(graphdef, start_layer)
    token_mean = jnp.bool_(cfg.normalization == "token_mean")
    key = jax.random.key(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # The whole schedule at once: no per-step host round trip for the rate.
    rates = [float(r) for r in np.asarray(jax.vmap(schedule)(jnp.arange(num_steps)))]
    losses, norms, pending = [], [], None
    tokens = 0
    start = time.perf_counter()
    hidden = _frozen_outputs(model, examples, start_layer, cfg.max_seq_len, progress) if start_layer else None
    batches = _step_batches(examples, cfg, num_steps, rng, hidden)
    if progress:
        batches = progress_bar(batches, total=num_steps, desc="finetune", unit="step", leave=True)
    try:
        for step, batch in enumerate(batches):
            tokens += int(sum(ex_len for ex_len in _real_lengths(batch)))
            train_state, loss, grad_norm = step_fn(
                train_state, frozen_state, batch, np.float32(rates[step]), jax.random.fold_in(key, step), token_mean
            )
            # Read step N-1's loss after dispatching step N: no host sync in the hot loop.
            if pending is not None:
                losses.append(_checked(pending[0], step - 1))
                norms.append(float(pending[1]))
            pending = (loss, grad_norm)
        losses.append(_checked(pending[0], num_steps - 1))
        norms.append(float(pending[1]))
    finally:
        # The donated buffers are gone; put the latest state back into the model and optimiser.
        nnx.update((model, optimizer), train_state)
    seconds = time.perf_counter() - start
    return FinetuneResult(
        losses=losses,
        steps=num_steps,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else float("inf"),
        truncated=truncated,
        learning_rates=rates,
        grad_norms=norms,
        cached_layers=start_layer,
        optimizer=optimizer,
    )


def loss_and_grads(model: nnx.Module, pairs: Sequence[Pair], cfg: FinetuneConfig, *, training: bool = False):
    """The step loss and its LoRA gradients with all ``pairs`` as one step's batch: (float, nnx.State).

    The batch is split into ``cfg.grad_accum`` micro-batches as ``finetune`` does;
    ``training`` turns adapter dropout on (key from ``cfg.seed``). For tests and diagnostics.
    """
    if len(pairs) % cfg.grad_accum:
        raise UserError(f"{len(pairs)} pairs cannot be split into grad_accum={cfg.grad_accum} micro-batches")
    examples, _ = encode_pairs(pairs, cfg.max_seq_len)
    width = bucket_length(max(ex.ids.size - 1 for ex in examples), cfg.max_seq_len)
    arrays = _rows(examples, width)
    batch = {k: v.reshape((cfg.grad_accum, len(pairs) // cfg.grad_accum) + v.shape[1:]) for k, v in arrays.items()}
    view = nnx.view(model, deterministic=not training, raise_if_not_found=False)
    token_mean = jnp.bool_(cfg.normalization == "token_mean")
    loss, grads = _loss_and_grads_jit(view, batch, token_mean, jax.random.key(cfg.seed))
    return float(loss), grads


_loss_and_grads_jit = nnx.jit(_accumulated_loss_and_grads)


def _real_lengths(batch: dict) -> np.ndarray:
    """Non-padding input tokens per row of a step batch (rows of weight 0 count 0)."""
    tokens = batch["tokens"]
    # A real row's inputs run up to its last completion target; the mask ends there.
    last = tokens.shape[-1] - np.argmax(batch["mask"][..., ::-1] > 0, axis=-1)
    return np.where(batch["weight"] > 0, last, 0).reshape(-1)


def _checked(loss: jax.Array, step: int) -> float:
    value = float(loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"finetune: the loss is {value} at step {step}; lower the learning rate")
    return value


def _logprob_rows(graphdef, state, tokens, targets, mask):
    model = nnx.merge(graphdef, state)
    return -completion_nll(model, tokens, targets, mask)


_logprob_rows_jit = jax.jit(_logprob_rows, static_argnums=(0,))


def sequence_logprobs(
    model: nnx.Module, pairs: Sequence[Pair], *, batch_size: int = 8, max_seq_len: int | None = None
) -> np.ndarray:
    """Per pair, log p(completion | prompt) summed over completion tokens: (num_pairs,) float64, nats.

    Evaluation mode (no dropout); ``max_seq_len`` (default: the longest pair) truncates like ``finetune``.
    """
    if len(pairs) == 0:
        return np.zeros((0,), np.float64)
    longest = max(len(p) + len(c) for p, c in pairs)
    limit = max_seq_len if max_seq_len is not None else longest
    examples, _ = encode_pairs(pairs, limit)
    eval_view = nnx.view(model, deterministic=True, raise_if_not_found=False)
    graphdef, state = nnx.split(eval_view)
    order = sorted(range(len(examples)), key=lambda k: examples[k].ids.size)
    out = np.zeros((len(examples),), np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = [examples[k] for k in idx] + [None] * (batch_size - len(idx))
        width = bucket_length(max(examples[k].ids.size - 1 for k in idx), limit)
        arrays = _rows(rows, width)
        lp = _logprob_rows_jit(graphdef, state, arrays["tokens"], arrays["targets"], arrays["mask"])
        out[idx] = np.asarray(lp, np.float64)[: len(idx)]
    return out
