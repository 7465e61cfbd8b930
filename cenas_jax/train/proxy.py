"""Proxy training of one built linen module on one dataset for ``cfg.seeds`` seeds.

``train_candidate`` compiles every program ahead of time (init, train step or
epoch scan, eval batch), so ``compile_s`` and ``train_s`` are separate and each
program compiles once per (module, shapes). Data stays on the device as uint8
and is normalised inside the step; batches are gathered on the device from a
per-epoch permutation. Keys: seed ``s`` trains from ``fold_in(key, s)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.config import TrainConfig
from cenas_jax.train import device_data, steps
from cenas_jax.train.compile_cache import enable_compile_cache
from cenas_jax.train.depthwise import fast_depthwise
from cenas_jax.train.errors import TrainError
from cenas_jax.train.flops import compiled_flops
from cenas_jax.train.pooling import fast_pooling
from cenas_jax.train.strategy import Strategy, choose_strategy

# In the loop strategy the NaN flag is read every this many steps (one host sync each).
NAN_CHECK_EVERY = 64

# XLA:CPU compile options for the programs that run only a few times. Init runs once per
# seed: LLVM's optimisations cost seconds on the threefry code of the initialisers and buy
# nothing, and XLA:CPU's fusion emitters cost compile time that a few runs never repay
# (measured, ResNet-style init, one core: 4.5 s -> 0.9 s at O0 -> 0.4 s without the
# emitters). The eval batch runs a handful of times per seed: emitters off only.
INIT_COMPILER_OPTIONS_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
EVAL_COMPILER_OPTIONS_CPU = {"xla_cpu_use_fusion_emitters": False}
# The train step (or epoch scan) of a candidate that trains few steps in all: without the fusion emitters
# it compiles 15-40% (0.15-0.7 s) faster and steps 0-11% slower (most for ResNet-small and VGG+BN), so
# over the six bench-eval nets the compile saved outweighs the steps lost below about 200 steps
# (DESIGN.md §3 "Speed": one core, A/B interleaved in one process).
FEW_STEPS = 128
FEW_STEPS_COMPILER_OPTIONS_CPU = {"xla_cpu_use_fusion_emitters": False}


def _options(cpu_options: dict) -> dict | None:
    return dict(cpu_options) if jax.default_backend() == "cpu" else None


def train_steps_per_process(schedule: list[tuple[int, int]], seeds: int, vmapped: bool) -> int:
    """How many train steps one candidate's step (or epoch) program runs: every epoch of every seed in turn,
    or of all seeds at once when they are vmapped."""
    return sum(n for _, n in schedule) * (1 if vmapped else seeds)


def step_options(total_steps: int) -> dict | None:
    """Compile options of the train step / epoch program: ``FEW_STEPS_COMPILER_OPTIONS_CPU`` on CPU when it
    runs at most ``FEW_STEPS`` steps in all, else XLA's defaults (None)."""
    return _options(FEW_STEPS_COMPILER_OPTIONS_CPU) if total_steps <= FEW_STEPS else None


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What one proxy training of one candidate measured.

    ``seed_accuracies``: accuracy on the evaluation split per seed, in [0, 1];
    ``accuracy``: their mean; ``loss``: mean over seeds of the last epoch's mean
    training loss (nats); ``params``: parameters in the ``params`` collection;
    ``flops``: FLOPs of one forward example from XLA's cost analysis of the
    compiled eval step (None where the backend gives none); ``compile_s``:
    tracing + lowering + compiling (seconds); ``train_s``: running init,
    training and evaluation (seconds); ``strategy``: "loop|scan/sequential|vmap";
    ``variables``: per-seed trained linen variables, only with ``return_variables``.
    """

    seed_accuracies: tuple[float, ...]
    accuracy: float
    loss: float
    params: int
    flops: float | None
    compile_s: float
    train_s: float
    strategy: str
    eval_split: str = "val"
    steps: int = 0
    variables: tuple[Any, ...] | None = dataclasses.field(default=None, repr=False, compare=False)


def _count_params(params: Any) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def _schedule(epochs: float, steps_per_epoch: int) -> list[tuple[int, int]]:
    """(epoch index, steps in it) for ``epochs`` (fractional allowed; at least one step)."""
    total = max(1, int(math.floor(epochs * steps_per_epoch + 1e-9)))
    out = []
    e = 0
    while total > 0:
        n = min(total, steps_per_epoch)
        out.append((e, n))
        total -= n
        e += 1
    return out


class _Compiler:
    """AOT compiles with timing; a failure becomes ``TrainError("compile")``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn: Callable, *args: Any, donate: tuple[int, ...] = (), options: dict | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
            compiled = lowered.compile(options) if options else lowered.compile()
        except MemoryError:
            raise
        except Exception as e:  # trace, lowering or XLA errors from candidate code
            raise TrainError("compile", f"{type(e).__name__}: {e}") from e
        finally:
            self.seconds += time.perf_counter() - t0
        return compiled


    def compile_lowered(self, lowered: Any, options: dict | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return lowered.compile(options) if options else lowered.compile()
        except MemoryError:
            raise
        except Exception as e:
            raise TrainError("compile", f"{type(e).__name__}: {e}") from e
        finally:
            self.seconds += time.perf_counter() - t0


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _stack_spec(tree: Any, n: int) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((n,) + tuple(a.shape), a.dtype), tree)


def _has_conv(lowered_text: str) -> bool:
    return "stablehlo.convolution" in lowered_text or "mhlo.convolution" in lowered_text


@dataclasses.dataclass(frozen=True)
class _Programs:
    """The compiled programs of one (module, shapes, recipe): reused while the process lives."""

    init: Any
    step: Any  # loop strategy: one train step; else None
    epochs: dict[int, Any]  # scan strategy: epoch length -> compiled epoch
    eval: Any
    vmapped: bool
    strategy: str
    params: int
    flops: float | None


# Candidates from the search are new classes (never hits); the cache serves retraining the
# same module object, tests and benchmarks. Bounded so that compiled programs do not pile up.
_PROGRAMS: OrderedDict[tuple, _Programs] = OrderedDict()
_PROGRAM_CACHE_SIZE = 8


def _program_key(module: nn.Module, takes_train: bool, input_shape: tuple, n_train: int, batch: int,
                 schedule: list, evald: Any, cfg: TrainConfig, key_spec: Any) -> tuple | None:
    recipe = (cfg.optimizer, cfg.learning_rate, cfg.momentum, cfg.weight_decay, cfg.seeds,
              cfg.epoch_strategy, cfg.seed_strategy, cfg.fast_pooling, cfg.fast_depthwise)
    # the step's compile options follow its step count: sequential seeds (all of them) or vmapped (one)
    few = tuple(train_steps_per_process(schedule, cfg.seeds, vm) <= FEW_STEPS for vm in (False, True))
    k = (type(module), module, takes_train, input_shape, n_train, batch, tuple(sorted({n for _, n in schedule})),
         evald.batch_size, evald.num_batches, recipe, few, str(key_spec.dtype), jax.default_backend())
    try:
        hash(k)
    except TypeError:  # a module with unhashable fields: compile every time
        return None
    return k


def _compile_programs(
    module: nn.Module, takes_train: bool, input_shape: tuple, n_train: int, batch: int, steps_per_epoch: int,
    schedule: list, evald: Any, num_classes: int, cfg: TrainConfig, key_spec: Any, compiler: _Compiler,
) -> _Programs:
    """Trace, check the logits shape, pick the strategy and compile every program of one candidate."""
    seeds = cfg.seeds
    fns = steps.build_fns(module, takes_train, input_shape, cfg, batch, steps_per_epoch, evald.batch_size)
    # Shapes of the state and logits without allocating anything.
    t0 = time.perf_counter()
    try:
        state_spec = jax.eval_shape(fns.init, key_spec)
        logits_spec = jax.eval_shape(
            fns.forward,
            steps.variables_of(state_spec),
            jax.ShapeDtypeStruct((evald.batch_size,) + input_shape, jnp.float32),
        )
    except MemoryError:
        raise
    except Exception as e:
        raise TrainError("compile", f"{type(e).__name__}: {e}") from e
    finally:
        compiler.seconds += time.perf_counter() - t0
    if tuple(logits_spec.shape) != (evald.batch_size, num_classes):
        raise TrainError(
            "shape",
            f"logits have shape {tuple(logits_spec.shape)} for a batch of {evald.batch_size}; "
            f"expected ({evald.batch_size}, {num_classes})",
        )
    n_params = _count_params(state_spec["params"])
    train_spec = _train_data_spec(n_train, input_shape)
    eval_spec = _eval_data_spec(evald, input_shape)
    vars_spec = steps.variables_of(state_spec)
    i_spec = jax.ShapeDtypeStruct((), jnp.int32)

    # Strategy: the lowered eval step tells whether the model convolves (cheap: no compile).
    t0 = time.perf_counter()
    try:
        eval_lowered = jax.jit(fns.eval_batch).lower(vars_spec, eval_spec, i_spec, i_spec)
        eval_text = eval_lowered.as_text()
    except Exception as e:
        raise TrainError("compile", f"{type(e).__name__}: {e}") from e
    finally:
        compiler.seconds += time.perf_counter() - t0
    strategy = choose_strategy(cfg, jax.default_backend(), _has_conv(eval_text))
    vmapped = strategy.seed == "vmap" and seeds > 1

    if vmapped:
        state_in = _stack_spec(state_spec, seeds)
        perm_spec = jax.ShapeDtypeStruct((seeds, n_train), jnp.int32)
        init_c = compiler(jax.vmap(fns.init), _stack_spec(key_spec, seeds), options=_options(INIT_COMPILER_OPTIONS_CPU))
        step_fn = jax.vmap(fns.step, in_axes=(0, None, 0))
        epoch_fn = jax.vmap(fns.epoch, in_axes=(0, None, 0, None))
        eval_fn = jax.vmap(fns.eval_batch, in_axes=(0, None, None, 0))
        eval_c = compiler(eval_fn, _stack_spec(vars_spec, seeds), eval_spec, i_spec,
                          jax.ShapeDtypeStruct((seeds,), jnp.int32), options=_options(EVAL_COMPILER_OPTIONS_CPU))
        flops_total = compiled_flops(eval_c)
        flops = flops_total / (seeds * evald.batch_size) if flops_total else None
    else:
        state_in = state_spec
        perm_spec = jax.ShapeDtypeStruct((n_train,), jnp.int32)
        init_c = compiler(fns.init, key_spec, options=_options(INIT_COMPILER_OPTIONS_CPU))
        step_fn, epoch_fn = fns.step, fns.epoch
        eval_c = compiler.compile_lowered(eval_lowered, options=_options(EVAL_COMPILER_OPTIONS_CPU))
        flops_total = compiled_flops(eval_c)
        flops = flops_total / evald.batch_size if flops_total else None

    opts = step_options(train_steps_per_process(schedule, seeds, vmapped))
    if strategy.epoch == "loop":
        step_c = compiler(step_fn, state_in, train_spec, perm_spec, donate=(0,), options=opts)
        epoch_cs = {}
    else:
        step_c = None
        epoch_cs = {
            n: compiler(lambda s, d, p, n=n: epoch_fn(s, d, p, n), state_in, train_spec, perm_spec, donate=(0,),
                        options=opts)
            for n in sorted({n for _, n in schedule})
        }
    return _Programs(
        init=init_c, step=step_c, epochs=epoch_cs, eval=eval_c, vmapped=vmapped,
        strategy=Strategy(strategy.epoch, "vmap" if vmapped else "sequential").name,
        params=n_params, flops=flops,
    )


def _train_data_spec(n: int, input_shape: tuple) -> tuple:
    c = input_shape[-1]
    return (
        jax.ShapeDtypeStruct((n,) + input_shape, jnp.uint8),
        jax.ShapeDtypeStruct((n,), jnp.int32),
        jax.ShapeDtypeStruct((c,), jnp.float32),
        jax.ShapeDtypeStruct((c,), jnp.float32),
    )


def _eval_data_spec(evald: Any, input_shape: tuple) -> tuple:
    return _abstract(evald.as_tuple())


def train_candidate(
    module: nn.Module,
    takes_train: bool,
    dataset: Any,
    cfg: TrainConfig,
    key: jax.Array,
    *,
    eval_split: str = "val",
    return_variables: bool = False,
) -> TrainResult:
    """Train ``module`` for ``cfg.epochs`` on ``dataset``'s training split, ``cfg.seeds`` times.

    ``dataset``: a ``cenas_jax.data.Dataset`` (uint8 NHWC images, int32 labels,
    per-channel ``mean``/``std`` in [0, 255] units). Accuracy is measured on
    ``eval_split`` ("val" during search, "test" for a final retrain). Raises
    ``TrainError("nan")`` when the training loss becomes NaN/Inf,
    ``TrainError("compile")`` when the module cannot be traced or compiled and
    ``TrainError("shape")`` when its logits are not ``(batch, num_classes)``.
    """
    if cfg.compile_cache:
        enable_compile_cache(cfg)
    compiler = _Compiler()
    train = device_data.train_arrays(dataset)
    n_train = int(train.x.shape[0])
    input_shape = tuple(int(d) for d in train.x.shape[1:])
    batch = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // batch
    schedule = _schedule(cfg.epochs, steps_per_epoch)
    evald = device_data.eval_arrays(dataset, eval_split, cfg.eval_batch_size)
    num_classes = int(dataset.num_classes)
    seeds = cfg.seeds

    key_spec = _abstract(jax.random.fold_in(key, 0))
    program_key = _program_key(module, takes_train, input_shape, n_train, batch, schedule, evald, cfg, key_spec)
    programs = _PROGRAMS.get(program_key) if program_key is not None else None
    if programs is None:
        # every trace of the candidate happens in here, with the XLA:CPU fast paths swapped in
        with fast_pooling(cfg.fast_pooling), fast_depthwise(cfg.fast_depthwise):
            programs = _compile_programs(
                module, takes_train, input_shape, n_train, batch, steps_per_epoch, schedule, evald, num_classes, cfg,
                key_spec, compiler,
            )
        if program_key is not None:
            _PROGRAMS[program_key] = programs
            while len(_PROGRAMS) > _PROGRAM_CACHE_SIZE:
                _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(program_key)
    init_c, step_c, epoch_cs, eval_c = programs.init, programs.step, programs.epochs, programs.eval
    vmapped = programs.vmapped
    train_data = train.as_tuple()
    eval_data = evald.as_tuple()
    seed_keys = [jax.random.fold_in(key, s) for s in range(seeds)]

    def run(state: dict, seed_label: str) -> dict:
        return run_schedule(state, schedule, n_train, vmapped, step_c, epoch_cs, train_data, seed_label)

    last_epoch_steps = schedule[-1][1]
    t1 = time.perf_counter()
    finals: list[dict] = []
    correct: list[int] = []
    losses: list[float] = []
    if vmapped:
        state = run(init_c(jnp.stack(seed_keys)), f"0..{seeds - 1}")
        acc = jnp.zeros((seeds,), jnp.int32)
        variables = steps.variables_of(state)
        for i in range(evald.num_batches):
            acc = eval_c(variables, eval_data, np.int32(i), acc)
        correct = [int(c) for c in np.asarray(acc)]
        losses = [float(v) / last_epoch_steps for v in np.asarray(state["loss_sum"])]
        if return_variables:
            finals = [jax.tree.map(lambda a, s=s: a[s], variables) for s in range(seeds)]
    else:
        for s in range(seeds):
            state = run(init_c(seed_keys[s]), str(s))
            acc = jnp.zeros((), jnp.int32)
            variables = steps.variables_of(state)
            for i in range(evald.num_batches):
                acc = eval_c(variables, eval_data, np.int32(i), acc)
            correct.append(int(acc))
            losses.append(float(state["loss_sum"]) / last_epoch_steps)
            if return_variables:
                finals.append(variables)
    train_s = time.perf_counter() - t1

    accs = tuple(c / evald.count for c in correct)
    return TrainResult(
        seed_accuracies=accs,
        accuracy=float(np.mean(accs)),
        loss=float(np.mean(losses)),
        params=programs.params,
        flops=programs.flops,
        compile_s=compiler.seconds,
        train_s=train_s,
        strategy=programs.strategy,
        eval_split=eval_split,
        steps=sum(n for _, n in schedule),
        variables=tuple(finals) if return_variables else None,
    )


def run_schedule(state: dict, schedule: list, n_train: int, vmapped: bool, step_c: Any, epoch_cs: dict,
                 train_data: tuple, seed_label: str, place_perm: Callable | None = None) -> dict:
    """Train one state (a stack of seeds when ``vmapped``) through ``schedule``: a loop of the compiled step
    ``step_c``, or one compiled epoch scan per epoch length in ``epoch_cs``; the NaN flag is read every
    ``NAN_CHECK_EVERY`` steps and at the end. Each epoch's permutation comes from the state's ``perm_key``."""
    done = 0
    for epoch_index, n in schedule:
        epoch_arr = np.int32(epoch_index)
        if vmapped:
            perm = steps.epoch_perms(state["perm_key"], epoch_arr, n_train)
        else:
            perm = steps.epoch_perm(state["perm_key"], epoch_arr, n_train)
        if place_perm is not None:  # e.g. split along the seed axis like the state
            perm = place_perm(perm)
        if step_c is not None:
            for _ in range(n):
                state = step_c(state, train_data, perm)
                done += 1
                if done % NAN_CHECK_EVERY == 0:
                    _check_finite(state, done, seed_label)
        else:
            state = epoch_cs[n](state, train_data, perm)
            done += n
            _check_finite(state, done, seed_label)
    _check_finite(state, done, seed_label)
    return state


def _check_finite(state: dict, steps_done: int, seed_label: str) -> None:
    bad = np.asarray(state["nonfinite"])
    if np.any(bad > 0):
        raise TrainError("nan", f"training loss became NaN/Inf within the first {steps_done} steps (seed {seed_label})")


def evaluate_accuracy(
    module: nn.Module,
    takes_train: bool,
    variables: Any,
    dataset: Any,
    split: str = "test",
    eval_batch_size: int = 512,
    fast_paths: bool = True,
) -> float:
    """Accuracy in [0, 1] of trained linen ``variables`` on ``dataset``'s ``split`` ("val" or "test").

    ``variables`` is one entry of ``TrainResult.variables`` (``train_candidate(...,
    return_variables=True)``); evaluation runs in fixed-size padded batches.
    """
    evald = device_data.eval_arrays(dataset, split, eval_batch_size)
    train = device_data.train_arrays(dataset)
    input_shape = tuple(int(d) for d in train.x.shape[1:])
    fns = steps.build_fns(module, takes_train, input_shape, TrainConfig(), 1, 1, evald.batch_size)
    data = evald.as_tuple()
    acc = jnp.zeros((), jnp.int32)
    with fast_pooling(fast_paths), fast_depthwise(fast_paths):
        eval_c = jax.jit(fns.eval_batch).lower(variables, data, np.int32(0), acc).compile()
    for i in range(evald.num_batches):
        acc = eval_c(variables, data, np.int32(i), acc)
    return int(acc) / evald.count
