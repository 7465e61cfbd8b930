"""Place the decoder's parameters on a device mesh by their logical axes.

Every parameter of ``llm/model.py`` names its axes (``vocab``, ``embed``,
``heads``, ``kv``, ``mlp``). A rule table maps those names to mesh axes:
``DEFAULT_RULES`` shards the hidden (``embed``) axis over ``data`` — FSDP —
and the head / MLP / vocabulary axes over ``model`` — tensor parallelism.
``FSDP_RULES`` uses a 1-D ``data`` mesh only. Activations follow by XLA's
sharding propagation; the same jitted code runs on one device or a pod.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, str | None], ...]

DEFAULT_RULES: Rules = (
    ("embed", "data"),
    ("vocab", "model"),
    ("heads", "model"),
    ("kv", "model"),
    ("mlp", "model"),
)
FSDP_RULES: Rules = (("embed", "data"), ("vocab", None), ("heads", None), ("kv", None), ("mlp", None))


def make_mesh(data: int | None = None, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``('data', 'model')`` mesh; ``data`` defaults to all devices divided by ``model``."""
    devices = list(devices if devices is not None else jax.devices())
    if data is None:
        data = len(devices) // model
    if data * model != len(devices):
        raise ValueError(f"mesh {data}x{model} does not match {len(devices)} devices")
    return Mesh(np.array(devices).reshape(data, model), ("data", "model"))


def _spec_for(shape: tuple[int, ...], logical: tuple | None, rules: Rules, mesh: Mesh) -> PartitionSpec:
    """Mesh partition spec of one parameter; an axis whose size the mesh axis does not divide stays replicated."""
    if not logical:
        return PartitionSpec()
    table = dict(rules)
    out = []
    for dim, name in zip(shape, logical):
        axis = table.get(name) if name is not None else None
        if axis is not None and (axis not in mesh.shape or dim % mesh.shape[axis]):
            axis = None
        out.append(axis)
    # A mesh axis may appear once per spec; a second use is replicated.
    seen: set[str] = set()
    for i, a in enumerate(out):
        if a is not None:
            if a in seen:
                out[i] = None
            seen.add(a)
    return PartitionSpec(*out)


def _variables(model: nnx.Module):
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            yield path, node


def param_shardings(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict[tuple, NamedSharding]:
    """``NamedSharding`` of every variable of ``model``, keyed by its graph path."""
    return {
        path: NamedSharding(mesh, _spec_for(tuple(v.shape), v.get_metadata().get("out_sharding"), rules, mesh))
        for path, v in _variables(model)
    }


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.Module:
    """Move ``model``'s parameters onto ``mesh`` in place (by their logical axes) and return it."""
    shardings = param_shardings(model, mesh, rules)
    for path, v in _variables(model):
        v.set_value(jax.device_put(v.get_value(), shardings[path]))
    return model
