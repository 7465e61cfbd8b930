"""A dataset's arrays on the device, put there once per dataset and reused by every candidate."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainArrays:
    """Training split on the device: ``x`` uint8 (N, H, W, C), ``y`` int32 (N,),
    ``mean``/``std`` float32 (C,) in [0, 255] units."""

    x: jax.Array
    y: jax.Array
    mean: jax.Array
    std: jax.Array

    def as_tuple(self) -> tuple[jax.Array, ...]:
        return (self.x, self.y, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class EvalArrays:
    """An evaluation split padded to whole batches: ``x`` (num_batches*B, H, W, C) uint8,
    ``y`` int32, ``mask`` bool (False on padding), ``count`` real examples."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array
    mean: jax.Array
    std: jax.Array
    batch_size: int
    num_batches: int
    count: int

    def as_tuple(self) -> tuple[jax.Array, ...]:
        return (self.x, self.y, self.mask, self.mean, self.std)


# id(dataset) -> (weakref to it, {cache key: arrays}); a few datasets at most per process.
_cache: dict[int, tuple[Any, dict]] = {}


def _entries(dataset: Any) -> dict:
    key = id(dataset)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is dataset:
        return hit[1]
    for k in [k for k, (ref, _) in _cache.items() if ref() is None]:
        del _cache[k]
    try:
        ref = weakref.ref(dataset)
    except TypeError:  # objects without weakref support: keep a strong reference
        ref = lambda d=dataset: d  # noqa: E731 - a stand-in called like the weakref.ref it replaces
    entries: dict = {}
    _cache[key] = (ref, entries)
    return entries


def _stats(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(dataset.mean, np.float32).reshape(-1)
    std = np.asarray(dataset.std, np.float32).reshape(-1)
    # A constant channel has std 0; dividing by it would make every input inf.
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return mean, std


def _check_split(x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"dataset x_{split}: expected NHWC images (4 dims), got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"dataset split {split!r}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"dataset split {split!r} is empty")


def train_arrays(dataset: Any) -> TrainArrays:
    """The training split on the default device (cached per dataset object)."""
    entries = _entries(dataset)
    if "train" not in entries:
        x = np.asarray(dataset.x_train)
        y = np.asarray(dataset.y_train, np.int32)
        _check_split(x, y, "train")
        mean, std = _stats(dataset)
        entries["train"] = TrainArrays(
            x=jax.device_put(x), y=jax.device_put(y), mean=jax.device_put(mean), std=jax.device_put(std)
        )
    return entries["train"]


def eval_arrays(dataset: Any, split: str, batch_size: int) -> EvalArrays:
    """Split ``split`` ("val" or "test") in ``ceil(n / batch_size)`` equal batches, the last one padded."""
    if split not in ("val", "test", "train"):
        raise ValueError(f"eval split must be 'val', 'test' or 'train', got {split!r}")
    x = np.asarray(getattr(dataset, f"x_{split}"))
    y = np.asarray(getattr(dataset, f"y_{split}"), np.int32)
    _check_split(x, y, split)
    n = len(x)
    # The fewest batches of at most batch_size, as even as possible: little padding is computed.
    b = -(-n // -(-n // batch_size))
    key = ("eval", split, b)
    entries = _entries(dataset)
    if key not in entries:
        num_batches = -(-n // b)
        pad = num_batches * b - n
        xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        yp = np.concatenate([y, np.zeros((pad,), np.int32)]) if pad else y
        mask = np.arange(num_batches * b) < n
        mean, std = _stats(dataset)
        entries[key] = EvalArrays(
            x=jax.device_put(xp), y=jax.device_put(yp), mask=jax.device_put(mask),
            mean=jax.device_put(mean), std=jax.device_put(std),
            batch_size=b, num_batches=num_batches, count=n,
        )
    return entries[key]
