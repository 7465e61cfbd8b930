"""The pure functions of proxy training for one linen module: init, train step, epoch scan, eval batch.

State of one seed (a dict pytree, donated to every step):
  ``params``, ``extra`` (mutable collections such as ``batch_stats``), ``opt`` (optax state),
  ``dropout_key``, ``perm_key``, ``step`` (int32, global step), ``loss_sum`` (float32, summed
  training loss of the current epoch), ``nonfinite`` (int32, steps whose loss was NaN/Inf).
Data tuples: train ``(x uint8 NxHxWxC, y int32 N, mean f32 C, std f32 C)``;
eval ``(x, y, mask bool, mean, std)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cenas_jax.config import TrainConfig

# Collections that are never carried as training state: ``sow`` appends to them every call.
_TRANSIENT = ("intermediates",)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The optax optimiser of ``cfg`` (weight decay as decoupled decay for sgd/adam too)."""
    if cfg.optimizer == "sgd":
        tx = optax.sgd(cfg.learning_rate, momentum=cfg.momentum or None)
    elif cfg.optimizer == "adam":
        tx = optax.adam(cfg.learning_rate)
    elif cfg.optimizer == "adamw":
        return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:  # config validation makes this unreachable; keep the message for direct callers
        raise ValueError(f"train.optimizer: expected sgd|adam|adamw, got {cfg.optimizer!r}")
    if cfg.weight_decay > 0:
        tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
    return tx


def normalise(x_u8: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 images (B, H, W, C) -> float32 ``(x - mean) / std`` per channel."""
    return (x_u8.astype(jnp.float32) - mean) / std


@dataclasses.dataclass(frozen=True)
class ModelFns:
    """Pure functions for one module, input shape, batch size and steps per epoch."""

    init: Callable[[jax.Array], dict]  # seed_key -> state
    step: Callable[[dict, tuple, jax.Array], dict]  # (state, train data, perm N) -> state
    epoch: Callable[..., dict]  # (state, train data, perm, num_steps static) -> state
    eval_batch: Callable[[dict, tuple, jax.Array, jax.Array], jax.Array]  # (variables, eval data, i, acc) -> acc
    forward: Callable[[dict, jax.Array], jax.Array]  # (variables, x float32 BxHxWxC) -> logits


def build_fns(
    module: nn.Module,
    takes_train: bool,
    input_shape: tuple[int, ...],
    cfg: TrainConfig,
    batch_size: int,
    steps_per_epoch: int,
    eval_batch_size: int,
) -> ModelFns:
    """Close the pure training functions over ``module`` and the static sizes."""
    tx = make_optimizer(cfg)

    def kw(train: bool) -> dict:
        return {"train": train} if takes_train else {}

    def init(seed_key: jax.Array) -> dict:
        k_params, k_init_drop, k_dropout, k_perm = (jax.random.fold_in(seed_key, i) for i in range(4))
        x1 = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
        variables = dict(module.init({"params": k_params, "dropout": k_init_drop}, x1, **kw(False)))
        for c in _TRANSIENT:
            variables.pop(c, None)
        params = variables.pop("params", {})
        return {
            "params": params,
            "extra": variables,
            "opt": tx.init(params),
            "dropout_key": k_dropout,
            "perm_key": k_perm,
            "step": jnp.zeros((), jnp.int32),
            "loss_sum": jnp.zeros((), jnp.float32),
            "nonfinite": jnp.zeros((), jnp.int32),
        }

    def apply(variables: dict, x: jax.Array, train: bool, rngs: dict | None = None) -> tuple[jax.Array, dict]:
        cols = [c for c in variables if c != "params"]
        if cols:
            # Mutable even in eval: a module without a ``train`` flag may update BatchNorm stats always.
            logits, updates = module.apply(variables, x, rngs=rngs, mutable=cols + list(_TRANSIENT), **kw(train))
            updates = {c: updates[c] for c in cols if c in updates}
        else:
            logits = module.apply(variables, x, rngs=rngs, **kw(train))
            updates = {}
        return jnp.asarray(logits, jnp.float32), updates

    def forward(variables: dict, x: jax.Array) -> jax.Array:
        return apply(variables, x, train=False)[0]

    def step(state: dict, data: tuple, perm: jax.Array) -> dict:
        x_all, y_all, mean, std = data
        i = state["step"] % steps_per_epoch
        idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
        x = normalise(jnp.take(x_all, idx, axis=0), mean, std)
        y = jnp.take(y_all, idx, axis=0)
        rng = jax.random.fold_in(state["dropout_key"], state["step"])

        def loss_fn(params: Any) -> tuple[jax.Array, dict]:
            logits, updates = apply({"params": params, **state["extra"]}, x, train=True, rngs={"dropout": rng})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        deltas, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], deltas)
        extra = {c: updates.get(c, v) for c, v in state["extra"].items()}
        return {
            **state,
            "params": params,
            "extra": extra,
            "opt": opt,
            "step": state["step"] + 1,
            # The sum restarts at each epoch so that the final loss is the last epoch's mean.
            "loss_sum": jnp.where(i == 0, 0.0, state["loss_sum"]) + loss,
            "nonfinite": state["nonfinite"] + (~jnp.isfinite(loss)).astype(jnp.int32),
        }

    def epoch(state: dict, data: tuple, perm: jax.Array, num_steps: int) -> dict:
        def body(s: dict, _: None) -> tuple[dict, None]:
            return step(s, data, perm), None

        return jax.lax.scan(body, state, None, length=num_steps)[0]

    def eval_batch(variables: dict, data: tuple, i: jax.Array, acc: jax.Array) -> jax.Array:
        x_all, y_all, mask, mean, std = data
        start = i * eval_batch_size
        x = normalise(jax.lax.dynamic_slice_in_dim(x_all, start, eval_batch_size), mean, std)
        y = jax.lax.dynamic_slice_in_dim(y_all, start, eval_batch_size)
        m = jax.lax.dynamic_slice_in_dim(mask, start, eval_batch_size)
        logits = forward(variables, x)
        correct = (jnp.argmax(logits, axis=-1) == y) & m
        return acc + correct.sum(dtype=jnp.int32)

    return ModelFns(init=init, step=step, epoch=epoch, eval_batch=eval_batch, forward=forward)


def variables_of(state: dict) -> dict:
    """The linen variables (``params`` + mutable collections) held in a training state."""
    return {"params": state["params"], **state["extra"]}


@functools.partial(jax.jit, static_argnums=2)
def epoch_perm(perm_key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    """Permutation of ``n`` training indices for ``epoch`` (shared by every candidate: compiled once)."""
    return jax.random.permutation(jax.random.fold_in(perm_key, epoch), n)


@functools.partial(jax.jit, static_argnums=2)
def epoch_perms(perm_keys: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    """``epoch_perm`` for a stack of seeds: (S,) keys -> (S, n) permutations."""
    return jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n))(perm_keys)
