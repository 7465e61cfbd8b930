"""Save and restore LoRA adapters (+ optimiser state + a small JSON metadata dict) with orbax.

A checkpoint is one orbax composite directory with the items
``adapters`` (the model's ``nnx.LoRAParam`` arrays), ``optimizer`` (optional, the
``nnx.Optimizer`` state) and ``meta`` (JSON: format tag, the adapter shapes, the caller's
metadata). Base weights are not saved: they come from the model files. Restoring goes
into the structure of a freshly built, ``apply_lora``'d model (the abstract target), so a
checkpoint from another model or LoRA configuration is refused with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from cenas_jax.errors import UserError

FORMAT = "cenas-lora-checkpoint"
VERSION = 1


def _shapes(pure: dict) -> dict[str, list]:
    """{'layers/0/attn/q_proj/lora/lora_a': [shape, dtype], ...} of a pure state dict."""
    flat = jax.tree_util.tree_flatten_with_path(pure)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): [list(np.shape(v)), str(v.dtype)]
        for path, v in flat
    }


def _abstract(pure: dict) -> dict:
    """The restore target: shapes, dtypes and, for arrays, where they live (in a ``--distributed`` run the
    adapters are restored as arrays replicated over every process: DESIGN.md §7 "Many hosts")."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
                        pure)


def save_checkpoint(
    directory: str | os.PathLike,
    model: nnx.Module,
    optimizer: nnx.Optimizer | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the adapters (and optimiser state, metadata) of ``model`` to ``directory``; returns its path.

    The write is atomic (orbax writes a temporary directory and renames it).
    """
    path = Path(directory).expanduser().resolve()
    adapters = nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))
    if not jax.tree.leaves(adapters):
        raise UserError(f"cannot save {path}: the model has no LoRA adapters")
    if path.exists() and not overwrite:
        raise UserError(f"checkpoint directory {path} already exists (pass overwrite=True to replace it)")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "adapters": _shapes(adapters),
        "has_optimizer": optimizer is not None,
        "metadata": metadata or {},
    }
    items = {"adapters": ocp.args.StandardSave(adapters), "meta": ocp.args.JsonSave(meta)}
    if optimizer is not None:
        items["optimizer"] = ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(optimizer)))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(**items), force=overwrite)
    return path


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The full ``meta`` item of a checkpoint (format, adapter shapes, the caller's metadata)."""
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"no LoRA checkpoint at {path}: the directory does not exist")
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            meta = ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many kinds on a damaged directory
        raise UserError(f"LoRA checkpoint {path} is unreadable (missing or corrupt 'meta' item): {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a cenas LoRA checkpoint (format tag {FORMAT!r} missing)")
    if meta.get("version") != VERSION:
        raise UserError(f"LoRA checkpoint {path} has version {meta.get('version')}; this code reads {VERSION}")
    return meta


def restore_checkpoint(
    directory: str | os.PathLike, model: nnx.Module, optimizer: nnx.Optimizer | None = None
) -> dict[str, Any]:
    """Load adapters (and optimiser state) into ``model`` (and ``optimizer``) in place; returns the metadata.

    ``model`` must be built and ``apply_lora``'d exactly as the saved one was; ``optimizer``
    from ``finetune.make_optimizer(model, cfg)``.
    """
    path = Path(directory).expanduser().resolve()
    meta = read_metadata(path)
    target = nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))
    want, have = _shapes(target), meta.get("adapters", {})
    if want != have:
        missing = sorted(set(want) - set(have))[:3]
        extra = sorted(set(have) - set(want))[:3]
        differ = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:3]
        raise UserError(
            f"LoRA checkpoint {path} does not match the model's adapters: "
            f"missing {missing}, unexpected {extra}, different shape/dtype {differ} "
            "(build the model and apply_lora with the configuration the checkpoint was saved with)"
        )
    items = {"adapters": ocp.args.StandardRestore(_abstract(target))}
    opt_target = None
    if optimizer is not None:
        if not meta.get("has_optimizer"):
            raise UserError(f"LoRA checkpoint {path} holds no optimiser state")
        opt_target = nnx.to_pure_dict(nnx.state(optimizer))
        items["optimizer"] = ocp.args.StandardRestore(_abstract(opt_target))
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            restored = ckptr.restore(path, args=ocp.args.Composite(**items))
    except Exception as e:
        raise UserError(f"LoRA checkpoint {path} could not be restored (corrupt or mismatched arrays): {e}") from None
    _update_from_pure(model, nnx.LoRAParam, restored["adapters"])
    if optimizer is not None:
        _update_from_pure(optimizer, ..., restored["optimizer"])
    return meta["metadata"]


def _update_from_pure(node: Any, filt: Any, pure: dict) -> None:
    state = nnx.state(node, filt)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(node, state)
