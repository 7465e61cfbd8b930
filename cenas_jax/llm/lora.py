"""LoRA adapters on the decoder's projections, through ``flax.nnx``'s own LoRA.

Each chosen projection (an ``nnx.Linear``) is wrapped by :class:`LoRAProjection`:

    y = base(x) + (alpha / rank) * nnx.LoRA(dropout(x))

The adapter matrices are ``nnx.LoRAParam`` variables (``lora_a``: in x r, He-uniform;
``lora_b``: r x out, zeros), so a freshly adapted model computes exactly what the base
model computes, and ``nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)`` trains only them.
Adapters are kept in float32 whatever the base dtype (optimiser precision); their output
is cast to the base projection's compute dtype. Dropout acts on the adapter input only and
only in training mode (``nnx.view(model, deterministic=False)``); a new adapter is in
evaluation mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cenas_jax.config import LoRAConfig
from cenas_jax.errors import UserError

# Where each target projection lives inside a decoder layer.
_TARGET_PARENT = {
    "q_proj": "attn",
    "k_proj": "attn",
    "v_proj": "attn",
    "o_proj": "attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


def _axis_names(base: nnx.Linear) -> tuple | None:
    """The kernel's logical sharding axes (in, out), if the model annotated them."""
    meta = base.kernel.get_metadata() if hasattr(base.kernel, "get_metadata") else {}
    for key in ("out_sharding", "sharding_names", "sharding"):
        names = meta.get(key)
        if isinstance(names, tuple) and len(names) == 2:
            return names
    return None


class DropoutKey(nnx.Variable):
    """The PRNG key of one adapter's dropout mask (not trained)."""


@jax.custom_vjp
def lora_delta(x: jax.Array, a_IxR: jax.Array, b_RxO: jax.Array) -> jax.Array:
    """``(x @ a) @ b`` over the last axis of ``x`` (any leading axes), with a hand-written backward pass.

    The same numbers as ``nnx.LoRA``'s ``x @ lora_a @ lora_b``. The backward pass contracts over
    the flattened token axis as plain 2-D matrix products: differentiating the 3-D ``x @ a`` made
    XLA:CPU transpose every projection's ``(tokens, out)`` gradient into an unfused copy, which cost
    more than all the adapters' products (DESIGN.md §4 "Fine-tuning speed").
    """
    return (x @ a_IxR) @ b_RxO


def _lora_delta_fwd(x, a_IxR, b_RxO):
    h = x @ a_IxR
    return h @ b_RxO, (x, a_IxR, b_RxO, h)


def _lora_delta_bwd(res, g):
    x, a_IxR, b_RxO, h = res
    contract_rows = (((0,), (0,)), ((), ()))  # sum over the flattened tokens: (N, p) x (N, q) -> (p, q)
    g_NxO = g.reshape(-1, g.shape[-1])
    db = jax.lax.dot_general(h.reshape(-1, h.shape[-1]), g_NxO, contract_rows)
    gh = g @ b_RxO.T
    da = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), gh.reshape(-1, gh.shape[-1]), contract_rows)
    return (gh @ a_IxR.T).astype(x.dtype), da.astype(a_IxR.dtype), db.astype(b_RxO.dtype)


lora_delta.defvjp(_lora_delta_fwd, _lora_delta_bwd)


def with_dropout_keys(key_state: nnx.State, key: jax.Array) -> nnx.State:
    """A copy of ``key_state`` (the model's ``DropoutKey`` variables) with key i = fold_in(key, i)."""
    leaves, treedef = jax.tree.flatten(key_state)
    return jax.tree.unflatten(treedef, [jax.random.fold_in(key, i) for i in range(len(leaves))])


class LoRAProjection(nnx.Module):
    """A base ``nnx.Linear`` plus a scaled low-rank ``nnx.LoRA`` update (see module doc)."""

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs):
        self.base = base
        self.rank = rank
        self.scale = float(alpha) / float(rank)
        names = _axis_names(base)
        # The adapter follows the base kernel's sharding: A shards like its input axis, B like its output.
        a_meta = {"out_sharding": (names[0], None)} if names else {}
        b_meta = {"out_sharding": (None, names[1])} if names else {}
        # Annotations are metadata only (as in the model); llm/sharding.py places the arrays.
        with nnx.use_eager_sharding(False):
            self.lora = nnx.LoRA(
                base.in_features,
                rank,
                base.out_features,
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                rngs=rngs,
                a_metadata=a_meta,
                b_metadata=b_meta,
            )
        # The dropout key is read-only state (no RNG counter to mutate under grad/scan); training
        # replaces it every micro-step with ``with_dropout_keys``. No Dropout at all at rate 0.
        if dropout > 0:
            self.dropout = nnx.Dropout(dropout, deterministic=True)
            self.dropout_key = DropoutKey(rngs.dropout())
        else:
            self.dropout = None

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        y = self.base(x_BxTxD)
        h = self.dropout(x_BxTxD, rngs=self.dropout_key[...]) if self.dropout is not None else x_BxTxD
        # nnx.LoRA's product (adapters and input in float32), through ``lora_delta``'s faster backward pass.
        delta = lora_delta(h.astype(jnp.float32), self.lora.lora_a[...], self.lora.lora_b[...])
        return y + (self.scale * delta).astype(y.dtype)

    def merged_kernel(self) -> jax.Array:
        """The base kernel with the adapter folded in, in the base dtype: (in, out)."""
        kernel = self.base.kernel[...]
        delta = self.scale * (self.lora.lora_a[...] @ self.lora.lora_b[...])
        return (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)


def _decoder_layers(model: nnx.Module) -> list:
    layers = getattr(model, "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} has no `layers`: LoRA expects a Llama-style decoder")
    return list(layers)


def select_layers(num_layers: int, layers: tuple[int, ...] | None) -> list[int]:
    """Resolve ``LoRAConfig.layers`` (None: all; negative: from the end) to sorted indices."""
    if layers is None:
        return list(range(num_layers))
    out = set()
    for i in layers:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise UserError(f"lora.layers: index {i} is out of range for a model with {num_layers} layers")
        out.add(j)
    return sorted(out)


def apply_lora(model: nnx.Module, cfg: LoRAConfig, rngs: nnx.Rngs) -> nnx.Module:
    """Wrap ``cfg.targets`` in the layers ``cfg.layers`` with LoRA adapters, in place; returns ``model``.

    The adapted model's outputs equal the base model's (B starts at zero).
    """
    layers = _decoder_layers(model)
    for i in select_layers(len(layers), cfg.layers):
        layer = layers[i]
        for target in cfg.targets:
            parent = getattr(layer, _TARGET_PARENT[target], None)
            proj = getattr(parent, target, None) if parent is not None else None
            if isinstance(proj, LoRAProjection):
                raise UserError(f"layer {i} {target} already has a LoRA adapter; merge_lora(model) first")
            if not isinstance(proj, nnx.Linear):
                raise UserError(
                    f"layer {i} has no nnx.Linear `{_TARGET_PARENT[target]}.{target}` for LoRA target {target!r}"
                )
            wrapped = LoRAProjection(proj, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, rngs=rngs)
            setattr(parent, target, wrapped)
    return model


def _iter_adapted(model: nnx.Module):
    """Yield (parent module, attribute name, LoRAProjection) for every adapter in the model."""
    for layer in _decoder_layers(model):
        for target, parent_name in _TARGET_PARENT.items():
            parent = getattr(layer, parent_name, None)
            proj = getattr(parent, target, None) if parent is not None else None
            if isinstance(proj, LoRAProjection):
                yield parent, target, proj


def has_lora(model: nnx.Module) -> bool:
    """Whether any projection of ``model`` carries a LoRA adapter."""
    return any(True for _ in _iter_adapted(model))


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every adapter into its base kernel and unwrap it, in place (for serving); returns ``model``."""
    for parent, name, proj in list(_iter_adapted(model)):
        proj.base.kernel[...] = proj.merged_kernel()
        setattr(parent, name, proj.base)
    return model


def lora_param_count(model: nnx.Module) -> int:
    """Number of trainable adapter scalars (all ``nnx.LoRAParam`` leaves)."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))))
