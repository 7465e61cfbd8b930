"""Degenerate programs, read off the forward pass's jaxpr: runs inside the sandbox worker only.

A program can build, train and score well while being something else than it looks: an edit
that put ``return`` inside the layer loop leaves a linear model with dead code after it; a
deleted activation turns an MLP into one affine map; a layer whose output is dropped trains
parameters that never reach the logits. Three flags, each ``"code: explanation"``:

- ``constant``: the logits do not depend on the input at all;
- ``linear``: the logits are an affine function of the input (no nonlinearity on any path
  from the input to them; eval mode, so BatchNorm with running statistics is affine);
- ``dead_params``: parameter tensors that no path connects to the logits (their layers' outputs
  are discarded), named by their layer.

The analysis is conservative: a primitive it does not know (control flow, custom calls) counts
as a nonlinearity and as using all its inputs, so a flag is only raised when it holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax

from cenas_jax.candidates import contract

# Primitives that are linear in each input the input image reaches, whatever the other inputs are.
_LINEAR = frozenset({
    "add", "add_any", "sub", "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "convert_element_type", "reduce_sum", "pad", "slice", "dynamic_slice", "concatenate", "copy", "copy_p",
    "reduce_window_sum", "rev", "cumsum", "reduce_precision", "sharding_constraint", "mesh_cast", "real",
    "dynamic_update_slice", "select_and_scatter_add",
})
# Linear as long as at most one operand depends on the input (a product of two such operands is not).
_BILINEAR = frozenset({"mul", "dot_general", "conv_general_dilated"})
# Primitives whose sub-jaxpr takes exactly the equation's inputs, in order: analysed inside.
_CALL_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")

MAX_FLAGS = 8


def _is_var(v: Any) -> bool:
    return not hasattr(v, "val")  # jaxpr Literals carry .val; Vars do not


def _sub_jaxpr(eqn: Any) -> Any | None:
    for name in _CALL_JAXPR_PARAMS:
        sub = eqn.params.get(name)
        if sub is None:
            continue
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars):
            return inner
    return None


def _taint(jaxpr: Any, tainted_in: list[bool]) -> tuple[list[bool], bool]:
    """Which outputs depend on the tainted inputs, and whether a nonlinear step touches a tainted value."""
    tainted = {v for v, t in zip(jaxpr.invars, tainted_in) if t}
    nonlinear = False
    for eqn in jaxpr.eqns:
        ins = [_is_var(v) and v in tainted for v in eqn.invars]
        if not any(ins):
            continue
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            outs, nl = _taint(sub, ins)
            nonlinear |= nl
        else:
            outs = [True] * len(eqn.outvars)
            if name in _LINEAR:
                pass
            elif name in _BILINEAR:
                nonlinear |= sum(ins[:2]) > 1
            elif name == "div":
                nonlinear |= ins[1]
            elif name == "select_n":
                nonlinear |= ins[0]
            elif name in ("gather", "dynamic_slice") and len(ins) > 1:
                nonlinear |= any(ins[1:])
            else:
                nonlinear = True
        tainted.update(v for v, t in zip(eqn.outvars, outs) if t)
    return [_is_var(v) and v in tainted for v in jaxpr.outvars], nonlinear


def _live_inputs(jaxpr: Any) -> list[bool]:
    """Which inputs some path connects to an output (a call is taken as using all its inputs)."""
    live = {v for v in jaxpr.outvars if _is_var(v)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if _is_var(v))
    return [v in live for v in jaxpr.invars]


def _layer(path: Iterable[Any]) -> tuple[str, str]:
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if keys and keys[0] == "params":
        keys = keys[1:]
    return ("/".join(keys[:-1]) or "<top>"), (keys[-1] if keys else "?")


def flags_of(closed_jaxpr: Any, variables: Any) -> list[str]:
    """The degeneracy flags of a forward jaxpr traced as ``f(variables, x)`` (inputs: variables' leaves, then x)."""
    jaxpr = closed_jaxpr.jaxpr
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    n_var = len(leaves)
    if len(jaxpr.invars) != n_var + 1:  # not the shape this analysis expects: say nothing rather than guess
        return []
    out: list[str] = []
    reaches, nonlinear = _taint(jaxpr, [False] * n_var + [True])
    if not any(reaches):
        out.append("constant: the logits do not depend on the input")
    elif not nonlinear:
        out.append("linear: the logits are an affine function of the input (no nonlinearity on any path to them)")
    live = _live_inputs(jaxpr)
    dead: dict[str, list[str]] = {}
    scalars = 0
    for (path, leaf), used in zip(leaves, live[:n_var]):
        if used or not path or str(getattr(path[0], "key", "")) != "params":
            continue
        layer, name = _layer(path)
        dead.setdefault(layer, []).append(name)
        scalars += int(getattr(leaf, "size", 0))
    if dead:
        layers = ", ".join(f"{k} ({', '.join(v)})" for k, v in list(dead.items())[:6]) + (" ..." if len(dead) > 6 else "")
        out.append(f"dead_params: {scalars:,} parameters never reach the logits: {layers}")
    return out[:MAX_FLAGS]


def degeneracy_flags(built: Any, input_shape: tuple[int, int, int]) -> list[str]:
    """Trace the eval-mode forward pass of a built ``Net`` (nothing allocated) and return its flags."""
    variables, _ = contract.abstract_variables(built, input_shape)
    return flags_of(contract.forward_jaxpr(built, input_shape, variables), variables)


def flag_codes(flags: Iterable[str] | None) -> list[str]:
    """``["linear", ...]`` from stored flags."""
    return [f.split(":", 1)[0] for f in flags or ()]
