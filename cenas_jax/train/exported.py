"""Proxy training split in two: the tracer exports a candidate's programs, the trainer runs them.

Why (DESIGN.md §3, "Integrity of scores"): a candidate's Python can reach whatever runs in its
process, including the code that scores it. So candidate Python runs only in a disposable tracer,
which turns the built module into three ``jax.export`` programs over flat tuples of arrays:

- ``init(seed_key u32[2]) -> (*params, *extra)``: the linen variables, ``params`` first
  (``extra``: mutable collections such as ``batch_stats``);
- ``loss_grad(*params, *extra, x f32[B,H,W,C], y i32[B], dropout_key u32[2])
  -> (loss f32[], *grads, *new_extra)``: one training batch, already normalised;
- ``forward(*params, *extra, x f32[E,H,W,C]) -> logits f32[E, num_classes]``: evaluation mode.
  It gets images only, never labels.

With vmapped seeds (accelerators) each program carries a leading seed axis on keys, variables and
outputs (``loss_grad`` also on the batch: every seed draws its own batches). When the trainer sees several
devices (e.g. one worker owning every chip of a TPU VM), the seeds are split over ``Shapes.seed_shards`` of
them: the programs are exported for ``seeds // seed_shards`` seeds, and the trainer runs one copy per device
under ``jax.shard_map`` with its state sharded along the seed axis (no collective: seeds never interact).

The trainer (``train_exported``) never imports, executes or unpickles anything a candidate wrote.
It checks every exported signature against the shapes it expects, refuses custom calls that are
not on ``ALLOWED_CUSTOM_CALLS`` and programs with effects (host callbacks), and then does all
that a score depends on itself: batches, normalisation, keys, the optimiser, the NaN check, the
accuracy from the returned logits, the parameter count from the leaves it holds, and FLOPs from
its own compilation. The loss a program reports is informational only.

Keys and batches are the ones ``proxy.train_candidate`` uses (seed ``s`` from ``fold_in(key, s)``,
its init keys ``fold_in(seed_key, 0|1)``, dropout ``fold_in(seed_key, 2)``, permutation
``fold_in(seed_key, 3)``), so both trainers give the same run up to floating-point reassociation.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.config import TrainConfig
from cenas_jax.train import device_data
from cenas_jax.train.errors import TrainError
from cenas_jax.train.flops import compiled_flops
from cenas_jax.train.proxy import (
    EVAL_COMPILER_OPTIONS_CPU,
    INIT_COMPILER_OPTIONS_CPU,
    TrainResult,
    _Compiler,
    _has_conv,
    _options,
    _schedule,
    run_schedule,
    step_options,
    train_steps_per_process,
)
from cenas_jax.train.steps import _TRANSIENT, make_optimizer, normalise
from cenas_jax.train.strategy import Strategy, choose_strategy

PROGRAMS = ("init", "loss_grad", "forward")
# Custom calls a plain Flax model lowers to (sharding annotations only). Anything else, e.g. a host
# callback (jax.pure_callback, jax.debug.print) or a vendor kernel, is refused: error kind "export".
ALLOWED_CUSTOM_CALLS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"})
MAX_EXPORT_BYTES = 256 << 20  # all of one candidate's serialised programs together
_CUSTOM_CALL = re.compile(r"stablehlo\.custom_call\s+@([\w.$-]+)|call_target_name\s*=\s*\"([^\"]*)\"")


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What both sides agree on before any program exists: the trainer derives it from the dataset."""

    input_shape: tuple[int, ...]
    batch: int
    eval_batch: int
    num_classes: int
    seeds: int
    seed_shards: int = 1  # devices the vmapped seeds are split over (divides ``seeds``)

    def __post_init__(self) -> None:
        if not (isinstance(self.seed_shards, int) and 1 <= self.seed_shards and self.seeds % self.seed_shards == 0):
            raise ValueError(f"seed_shards={self.seed_shards!r} must be a positive divisor of seeds={self.seeds}")

    @property
    def seeds_per_program(self) -> int:
        """The seed axis of vmapped programs: the seeds one device runs."""
        return self.seeds // self.seed_shards

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_dataset(cls, dataset: Any, cfg: TrainConfig, eval_split: str = "val", devices: int | None = None) -> Shapes:
        """``devices``: how many devices the trainer may split vmapped seeds over (default: this process's
        local devices of the default backend)."""
        n_train = int(dataset.x_train.shape[0])
        evald = device_data.eval_arrays(dataset, eval_split, cfg.eval_batch_size)
        n_dev = len(jax.local_devices()) if devices is None else devices
        return cls(tuple(int(d) for d in dataset.x_train.shape[1:]), min(cfg.batch_size, n_train),
                   evald.batch_size, int(dataset.num_classes), cfg.seeds, seed_shards(cfg.seeds, n_dev))  # fmt: skip


def seed_shards(seeds: int, devices: int) -> int:
    """How many devices ``seeds`` vmapped seeds are split over: the largest divisor of ``seeds`` that is at
    most ``devices`` (every device runs the same number of seeds; 3 seeds on 2 devices stay on one)."""
    return max(d for d in range(1, max(1, min(seeds, devices)) + 1) if seeds % d == 0)


# ---------------------------------------------------------------------------
# Tracer side: runs with the candidate's module (untrusted process)
# ---------------------------------------------------------------------------


def export_programs(
    module: Any, takes_train: bool, shapes: Shapes, cfg: TrainConfig, platform: str
) -> tuple[dict, dict[str, bytes]]:
    """Export ``module``'s programs for ``platform``; returns (metadata, {name: serialised bytes}).

    Raises ``TrainError("compile")`` when the module cannot be traced or lowered and
    ``TrainError("shape")`` when its logits are not ``(batch, num_classes)``.
    """
    from jax import export

    kw = {"train": True} if takes_train else {}
    kw_eval = {"train": False} if takes_train else {}
    key_spec = jax.ShapeDtypeStruct((2,), jnp.uint32)
    x1 = jnp.zeros((1,) + tuple(shapes.input_shape), jnp.float32)

    def init_tree(seed_key: jax.Array) -> tuple[dict, dict]:
        k_params, k_drop = jax.random.fold_in(seed_key, 0), jax.random.fold_in(seed_key, 1)
        variables = dict(module.init({"params": k_params, "dropout": k_drop}, x1, **kw_eval))
        for c in _TRANSIENT:
            variables.pop(c, None)
        params = variables.pop("params", {})
        return params, variables

    try:
        params_spec, extra_spec = jax.eval_shape(init_tree, key_spec)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - candidate code may raise anything while tracing
        raise TrainError("compile", f"{type(e).__name__}: {e}") from e
    p_leaves, p_def = jax.tree.flatten(params_spec)
    e_leaves, e_def = jax.tree.flatten(extra_spec)
    n_p = len(p_leaves)

    def unflat(leaves: tuple) -> tuple[Any, Any]:
        return jax.tree.unflatten(p_def, leaves[:n_p]), jax.tree.unflatten(e_def, leaves[n_p:])

    def apply(params: Any, extra: Any, x: jax.Array, train: bool, rng: jax.Array | None) -> tuple[jax.Array, Any]:
        variables = {"params": params, **extra}
        cols = list(extra)
        rngs = {"dropout": rng} if rng is not None else None
        if cols:
            logits, updates = module.apply(variables, x, rngs=rngs, mutable=cols + list(_TRANSIENT),
                                           **(kw if train else kw_eval))  # fmt: skip
            updates = {c: updates[c] for c in cols if c in updates}
        else:
            logits = module.apply(variables, x, rngs=rngs, **(kw if train else kw_eval))
            updates = {}
        return jnp.asarray(logits, jnp.float32), updates

    def init_flat(seed_key: jax.Array) -> tuple:
        params, extra = init_tree(seed_key)
        return tuple(jax.tree.leaves(params)) + tuple(jax.tree.leaves(extra))

    def loss_grad_flat(*args: Any) -> tuple:
        leaves, (x, y, rng) = args[:-3], args[-3:]
        params, extra = unflat(leaves)

        def loss_fn(p: Any) -> tuple[jax.Array, Any]:
            logits, updates = apply(p, extra, x, True, rng)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_extra = {c: updates.get(c, v) for c, v in extra.items()}
        return (loss, *jax.tree.leaves(grads), *jax.tree.leaves(new_extra))

    def forward_flat(*args: Any) -> jax.Array:
        params, extra = unflat(args[:-1])
        return apply(params, extra, args[-1], False, None)[0]

    leaf_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in p_leaves + e_leaves]
    img = tuple(shapes.input_shape)
    x_eval = jax.ShapeDtypeStruct((shapes.eval_batch,) + img, jnp.float32)
    try:
        logits_spec = jax.eval_shape(forward_flat, *leaf_specs, x_eval)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here is the candidate's own error, reported as such
        raise TrainError("compile", f"{type(e).__name__}: {e}") from e
    if tuple(logits_spec.shape) != (shapes.eval_batch, shapes.num_classes):
        raise TrainError("shape", f"logits have shape {tuple(logits_spec.shape)} for a batch of {shapes.eval_batch}; "
                                  f"expected ({shapes.eval_batch}, {shapes.num_classes})")  # fmt: skip

    def _export(fn: Any, *specs: Any) -> Any:
        try:
            return export.export(jax.jit(fn), platforms=(platform,))(*specs)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here is the candidate's own error, reported as such
            text = f"{type(e).__name__}: {e}"
            if "custom call" in text.lower() or "callback" in text.lower():  # e.g. jax.pure_callback
                raise TrainError("export", f"cannot be exported (custom call or host callback): {text}") from e
            raise TrainError("compile", text) from e

    forward = _export(forward_flat, *leaf_specs, x_eval)
    has_conv = _has_conv(forward.mlir_module())
    strategy = choose_strategy(cfg, "cpu" if platform == "cpu" else "accelerator", has_conv)
    vmapped = strategy.seed == "vmap" and shapes.seeds > 1
    x_train = jax.ShapeDtypeStruct((shapes.batch,) + img, jnp.float32)
    y_train = jax.ShapeDtypeStruct((shapes.batch,), jnp.int32)
    if vmapped:
        s = shapes.seeds_per_program
        stacked = [jax.ShapeDtypeStruct((s,) + tuple(a.shape), a.dtype) for a in leaf_specs]
        n = len(leaf_specs)
        init = _export(jax.vmap(init_flat), jax.ShapeDtypeStruct((s, 2), jnp.uint32))
        loss_grad = _export(jax.vmap(loss_grad_flat), *stacked, jax.ShapeDtypeStruct((s,) + x_train.shape, jnp.float32),
                            jax.ShapeDtypeStruct((s, shapes.batch), jnp.int32), jax.ShapeDtypeStruct((s, 2), jnp.uint32))
        forward = _export(jax.vmap(forward_flat, in_axes=(0,) * n + (None,)), *stacked, x_eval)
    else:
        init = _export(init_flat, key_spec)
        loss_grad = _export(loss_grad_flat, *leaf_specs, x_train, y_train, key_spec)
    programs = {"init": init, "loss_grad": loss_grad, "forward": forward}
    for name, exp in programs.items():
        refused = refused_custom_calls(exp)
        if refused:
            raise TrainError("export", f"the {name} program uses custom calls not on the allow-list: {', '.join(refused)}")
    blobs = {}
    for name, exp in programs.items():
        try:
            blobs[name] = bytes(exp.serialize())
        except Exception as e:  # noqa: BLE001 - e.g. effects that cannot be serialised
            raise TrainError("export", f"the {name} program cannot be serialised: {type(e).__name__}: {e}") from e
    meta = {"n_params": n_p, "n_extra": len(e_leaves), "vmapped": vmapped, "platform": platform}
    return meta, blobs


def refused_custom_calls(exp: Any) -> list[str]:
    """Custom-call targets in an exported module that are not on ``ALLOWED_CUSTOM_CALLS``."""
    text = exp.mlir_module()
    found = {a or b for a, b in _CUSTOM_CALL.findall(text)}
    return sorted(t for t in found if t not in ALLOWED_CUSTOM_CALLS)


# ---------------------------------------------------------------------------
# Trainer side: trusted code only
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedPrograms:
    """Deserialised and checked programs of one candidate."""

    init: Any
    loss_grad: Any
    forward: Any
    n_params: int
    n_extra: int
    vmapped: bool
    params: int  # elements in the params leaves (the trainer's own count)
    state_size: int  # elements in every leaf the model carries (params and mutable collections)
    has_conv: bool
    seed_shards: int = 1  # devices the seed axis is split over (``Shapes.seed_shards`` when vmapped)


def _refuse(message: str) -> TrainError:
    return TrainError("export", message)


def _avals(specs: Any) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in a.shape), str(a.dtype)) for a in specs]


def load_programs(meta: Any, blobs: Any, shapes: Shapes, platform: str) -> LoadedPrograms:
    """Deserialise a tracer's programs and check them against ``shapes``; ``TrainError("export")`` if
    anything is off (a wrong signature, custom calls off the allow-list, effects, another platform),
    ``TrainError("shape")`` when the logits have the wrong shape."""
    from jax import export

    if not isinstance(meta, dict) or not isinstance(blobs, dict) or set(blobs) != set(PROGRAMS):
        raise _refuse("the tracer sent an incomplete set of programs")
    n_p, n_e, vmapped = meta.get("n_params"), meta.get("n_extra"), meta.get("vmapped")
    if not (isinstance(n_p, int) and isinstance(n_e, int) and isinstance(vmapped, bool)) or n_p < 0 or n_e < 0:
        raise _refuse("the tracer sent malformed program metadata")
    if vmapped and shapes.seeds < 2:
        raise _refuse("vmapped programs for a single seed")
    if sum(len(b) for b in blobs.values()) > MAX_EXPORT_BYTES:
        raise _refuse(f"the programs exceed {MAX_EXPORT_BYTES >> 20} MiB")
    progs = {}
    for name in PROGRAMS:
        try:
            exp = export.deserialize(bytearray(blobs[name]))
        except Exception as e:  # noqa: BLE001 - hostile bytes may fail anywhere in the decoder
            raise _refuse(f"the {name} program cannot be deserialised: {type(e).__name__}") from None
        if tuple(exp.platforms) != (platform,):
            raise _refuse(f"the {name} program is for {list(exp.platforms)}, not [{platform!r}]")
        if exp.nr_devices != 1 or exp.ordered_effects or exp.unordered_effects:
            raise _refuse(f"the {name} program has effects or spans devices")
        refused = refused_custom_calls(exp)
        if refused:
            raise _refuse(f"the {name} program uses custom calls not on the allow-list: {', '.join(refused)}")
        progs[name] = exp
    init, loss_grad, forward = progs["init"], progs["loss_grad"], progs["forward"]
    lead = (shapes.seeds_per_program,) if vmapped else ()
    img = tuple(shapes.input_shape)
    key = [(lead + (2,), "uint32")]
    if _avals(init.in_avals) != key:
        raise _refuse(f"init takes {_avals(init.in_avals)}, expected {key}")
    leaves = _avals(init.out_avals)
    if len(leaves) != n_p + n_e or any(d not in ("float32", "bfloat16", "float16", "int32", "uint32") for _, d in leaves):
        raise _refuse("init returns leaves that do not match the metadata")
    if any(s[: len(lead)] != lead for s, _ in leaves):
        raise _refuse("init's leaves lack the seed axis")
    params_leaves = leaves[:n_p]
    want_lg_in = leaves + [(lead + (shapes.batch,) + img, "float32"), (lead + (shapes.batch,), "int32")] + key
    if _avals(loss_grad.in_avals) != want_lg_in:
        raise _refuse("loss_grad's signature does not match init's leaves and the batch")
    want_lg_out = [(lead, "float32")] + params_leaves + leaves[n_p:]
    if _avals(loss_grad.out_avals) != want_lg_out:
        raise _refuse("loss_grad must return (loss, gradients shaped as params, mutable state shaped as init's)")
    if _avals(forward.in_avals) != leaves + [((shapes.eval_batch,) + img, "float32")]:
        raise _refuse("forward's signature does not match init's leaves and the evaluation batch")
    want_logits = [(lead + (shapes.eval_batch, shapes.num_classes), "float32")]
    if _avals(forward.out_avals) != want_logits:
        got = _avals(forward.out_avals)
        raise TrainError("shape", f"logits have shape {got[0][0] if len(got) == 1 else got}; expected {want_logits[0][0]}")
    per_seed = shapes.seeds_per_program if vmapped else 1
    params = sum(int(np.prod(s, dtype=np.int64)) for s, _ in params_leaves) // per_seed
    state = sum(int(np.prod(s, dtype=np.int64)) for s, _ in leaves) // per_seed
    return LoadedPrograms(init, loss_grad, forward, n_p, n_e, vmapped, params, state,
                          _has_conv(forward.mlir_module()), shapes.seed_shards if vmapped else 1)  # fmt: skip


SEED_AXIS = "seed"


class _SeedMesh:
    """The seed axis split over ``n`` local devices: shardings for seed-led and replicated arrays, and the
    exported calls run per device under ``shard_map`` (each device's copy sees its own seeds only)."""

    def __init__(self, n: int) -> None:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        devices = jax.local_devices()
        if len(devices) < n:
            raise TrainError("compile", f"the seeds are split over {n} devices but this process sees {len(devices)}")
        self.mesh = Mesh(np.asarray(devices[:n]), (SEED_AXIS,))
        self.P = PartitionSpec
        self.seeded = NamedSharding(self.mesh, PartitionSpec(SEED_AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def call(self, exp: Any, *args: Any, seeded: tuple[bool, ...]) -> Any:
        specs = tuple(self.P(SEED_AXIS) if s else self.P() for s in seeded)
        return jax.shard_map(exp.call, mesh=self.mesh, in_specs=specs, out_specs=self.P(SEED_AXIS),
                             check_vma=False)(*args)  # fmt: skip

    def constrain_state(self, state: dict) -> dict:
        """Every state leaf with a seed axis stays split along it; scalars (the step counter) replicated."""
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.seeded if a.ndim else self.replicated), state)

    def spec(self, tree: Any, seeded: bool) -> Any:
        sh = self.seeded if seeded else self.replicated
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree)

    def put(self, tree: Any, seeded: bool) -> Any:
        return jax.device_put(tree, self.seeded if seeded else self.replicated)


def _trainer_fns(progs: LoadedPrograms, cfg: TrainConfig, shapes: Shapes, steps_per_epoch: int,
                 mesh: _SeedMesh | None = None) -> dict:
    """The trusted step, epoch and eval functions around the exported calls (per device under ``mesh``)."""
    tx = make_optimizer(cfg)
    n_p = progs.n_params
    batch, eval_batch = shapes.batch, shapes.eval_batch
    vm = progs.vmapped
    update = jax.vmap(tx.update) if vm else tx.update
    apply_updates = jax.vmap(optax.apply_updates) if vm else optax.apply_updates
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if vm else jax.random.fold_in
    keep = mesh.constrain_state if mesh is not None else (lambda state: state)

    def call(exp: Any, *args: Any, seeded: tuple[bool, ...]) -> Any:
        return exp.call(*args) if mesh is None else mesh.call(exp, *args, seeded=seeded)

    def init(seed_keys: jax.Array) -> dict:
        leaves = list(call(progs.init, seed_keys, seeded=(True,)))
        params = leaves[:n_p]
        return keep({
            "params": params,
            "extra": leaves[n_p:],
            "opt": jax.vmap(tx.init)(params) if vm else tx.init(params),
            "dropout_key": fold(seed_keys, 2),
            "perm_key": fold(seed_keys, 3),
            "step": jnp.zeros((), jnp.int32),
            "loss_sum": jnp.zeros((shapes.seeds,) if vm else (), jnp.float32),
            "nonfinite": jnp.zeros((shapes.seeds,) if vm else (), jnp.int32),
        })

    def step(state: dict, data: tuple, perm: jax.Array) -> dict:
        x_all, y_all, mean, std = data
        i = state["step"] % steps_per_epoch
        idx = jax.lax.dynamic_slice_in_dim(perm, i * batch, batch, axis=-1)
        x = normalise(jnp.take(x_all, idx, axis=0), mean, std)
        y = jnp.take(y_all, idx, axis=0)
        rng = fold(state["dropout_key"], state["step"])
        args = (*state["params"], *state["extra"], x, y, rng)
        out = call(progs.loss_grad, *args, seeded=(True,) * len(args))
        loss, grads, extra = out[0], list(out[1 : 1 + n_p]), list(out[1 + n_p :])
        deltas, opt = update(grads, state["opt"], state["params"])
        params = apply_updates(state["params"], deltas)
        loss = jnp.asarray(loss, jnp.float32)
        return keep({
            **state,
            "params": params,
            "extra": extra,
            "opt": opt,
            "step": state["step"] + 1,
            "loss_sum": jnp.where(i == 0, 0.0, state["loss_sum"]) + loss,
            "nonfinite": state["nonfinite"] + (~jnp.isfinite(loss)).astype(jnp.int32),
        })

    def epoch(state: dict, data: tuple, perm: jax.Array, num_steps: int) -> dict:
        return jax.lax.scan(lambda s, _: (step(s, data, perm), None), state, None, length=num_steps)[0]

    def eval_batch_fn(state_vars: tuple, data: tuple, i: jax.Array, acc: jax.Array) -> jax.Array:
        params, extra = state_vars
        x_all, y_all, mask, mean, std = data
        start = i * eval_batch
        x = normalise(jax.lax.dynamic_slice_in_dim(x_all, start, eval_batch), mean, std)
        y = jax.lax.dynamic_slice_in_dim(y_all, start, eval_batch)
        m = jax.lax.dynamic_slice_in_dim(mask, start, eval_batch)
        args = (*params, *extra, x)  # images only: the labels stay here
        logits = call(progs.forward, *args, seeded=(True,) * (len(args) - 1) + (False,))
        correct = (jnp.argmax(logits, axis=-1) == y) & m
        acc = acc + correct.sum(axis=-1, dtype=jnp.int32)
        return acc if mesh is None else jax.lax.with_sharding_constraint(acc, mesh.seeded)

    return {"init": init, "step": step, "epoch": epoch, "eval": eval_batch_fn}


def train_exported(
    progs: LoadedPrograms,
    dataset: Any,
    cfg: TrainConfig,
    key: jax.Array,
    *,
    eval_split: str = "val",
    max_params: int | None = None,
    seed_offset: int = 0,
) -> TrainResult:
    """Train the exported programs for ``cfg.epochs`` on ``dataset`` for ``cfg.seeds`` seeds and score them.

    The same contract as ``proxy.train_candidate`` (``TrainError`` kinds "nan", "compile", "shape"),
    plus "budget" when the model's parameters (counted here) exceed ``max_params``. The seeds are numbers
    ``seed_offset .. seed_offset + cfg.seeds - 1`` (seed ``s`` from ``fold_in(key, s)``), so a task of some
    seeds trains exactly what those seeds train in a task of all of them.
    """
    if max_params is not None and progs.params > max_params:
        raise TrainError("budget", f"{progs.params:,} parameters exceed the budget of {max_params:,}")
    shapes = Shapes.for_dataset(dataset, cfg, eval_split, devices=progs.seed_shards)
    compiler = _Compiler()
    train = device_data.train_arrays(dataset)
    n_train = int(train.x.shape[0])
    steps_per_epoch = n_train // shapes.batch
    schedule = _schedule(cfg.epochs, steps_per_epoch)
    evald = device_data.eval_arrays(dataset, eval_split, cfg.eval_batch_size)
    seeds, vm = cfg.seeds, progs.vmapped
    strategy = choose_strategy(cfg, jax.default_backend(), progs.has_conv)
    if shapes.seed_shards != progs.seed_shards:  # cfg.seeds is not the seed count the programs were checked for
        raise TrainError("export", f"programs split {shapes.seeds} seeds over {progs.seed_shards} devices; "
                                   f"{shapes.seed_shards} expected")  # fmt: skip
    mesh = _SeedMesh(progs.seed_shards) if progs.seed_shards > 1 else None
    fns = _trainer_fns(progs, cfg, shapes, steps_per_epoch, mesh)

    def spec(tree: Any, seeded: bool) -> Any:
        return mesh.spec(tree, seeded) if mesh is not None else jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)

    key_spec = spec(jax.ShapeDtypeStruct((seeds, 2) if vm else (2,), jnp.uint32), True)
    init_c = compiler(fns["init"], key_spec, options=_options(INIT_COMPILER_OPTIONS_CPU))
    state_spec = init_c.out_info
    train_spec = spec(train.as_tuple(), False)
    eval_spec = spec(evald.as_tuple(), False)
    perm_spec = spec(jax.ShapeDtypeStruct((seeds, n_train) if vm else (n_train,), jnp.int32), True)
    i_spec = spec(jax.ShapeDtypeStruct((), jnp.int32), False)
    acc_spec = spec(jax.ShapeDtypeStruct((seeds,) if vm else (), jnp.int32), True)
    vars_spec = (state_spec["params"], state_spec["extra"])
    eval_c = compiler(fns["eval"], vars_spec, eval_spec, i_spec, acc_spec, options=_options(EVAL_COMPILER_OPTIONS_CPU))
    flops_total = compiled_flops(eval_c)
    if flops_total and mesh is not None:  # XLA's cost analysis is of one device's share of the program
        flops_total *= progs.seed_shards
    flops = flops_total / ((seeds if vm else 1) * evald.batch_size) if flops_total else None
    opts = step_options(train_steps_per_process(schedule, seeds, vm))
    if strategy.epoch == "loop":
        step_c = compiler(fns["step"], state_spec, train_spec, perm_spec, donate=(0,), options=opts)
        epoch_cs: dict[int, Any] = {}
    else:
        step_c = None
        epoch_cs = {n: compiler(lambda s, d, p, n=n: fns["epoch"](s, d, p, n), state_spec, train_spec, perm_spec,
                                donate=(0,), options=opts) for n in sorted({n for _, n in schedule})}  # fmt: skip

    train_data, eval_data = train.as_tuple(), evald.as_tuple()
    seed_keys = [jax.random.fold_in(key, seed_offset + s) for s in range(seeds)]
    place_perm = None
    if mesh is not None:
        train_data, eval_data = mesh.put(train_data, False), mesh.put(eval_data, False)
        place_perm = lambda perm: mesh.put(perm, True)  # noqa: E731

    def run(state: dict, label: str) -> dict:
        return run_schedule(state, schedule, n_train, vm, step_c, epoch_cs, train_data, label, place_perm)

    def score(state: dict) -> list[int]:
        acc = jnp.zeros((seeds,) if vm else (), jnp.int32)
        i_arr = np.int32
        if mesh is not None:
            acc = mesh.put(acc, True)
            i_arr = lambda i: mesh.put(np.int32(i), False)  # noqa: E731
        for i in range(evald.num_batches):
            acc = eval_c((state["params"], state["extra"]), eval_data, i_arr(i), acc)
        return [int(c) for c in np.atleast_1d(np.asarray(acc))]

    last = schedule[-1][1]
    t1 = time.perf_counter()
    correct: list[int] = []
    losses: list[float] = []
    if vm:
        stacked = jnp.stack(seed_keys)
        state = run(init_c(stacked if mesh is None else mesh.put(stacked, True)), f"{seed_offset}..{seed_offset + seeds - 1}")
        correct = score(state)
        losses = [float(v) / last for v in np.asarray(state["loss_sum"])]
    else:
        for s in range(seeds):
            state = run(init_c(seed_keys[s]), str(seed_offset + s))
            correct += score(state)
            losses.append(float(state["loss_sum"]) / last)
    train_s = time.perf_counter() - t1
    accs = tuple(c / evald.count for c in correct)
    if any(not (0.0 <= a <= 1.0) for a in accs):  # cannot happen with the sum above; a last guard
        raise TrainError("compile", f"accuracy out of range: {accs}")
    return TrainResult(
        seed_accuracies=accs,
        accuracy=float(np.mean(accs)),
        loss=float(np.mean(losses)),
        params=progs.params,
        flops=flops,
        compile_s=compiler.seconds,
        train_s=train_s,
        strategy=Strategy(strategy.epoch, "vmap" if vm else "sequential").name,
        eval_split=eval_split,
        steps=sum(n for _, n in schedule),
    )
