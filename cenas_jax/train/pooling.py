"""Fast non-overlapping pooling for XLA:CPU, swapped into Flax while the trainer traces a candidate.

``flax.linen.max_pool``/``avg_pool``/``min_pool`` all call
``flax.linen.pooling.pool``, which lowers to ``lax.reduce_window``. The
gradient of a max ``reduce_window`` is a select-and-scatter that XLA:CPU
runs slowly: measured on a 2-conv CNN (mnist, batch 64, one thread), 54 of
86 ms per step went to the two 2x2 max-pool backward passes. When the window
equals the stride and no padding is added (the usual 2x2/stride-2 pooling),
the same result is a reshape and a reduction over the window axes, whose
gradient is elementwise: the step took 32 ms.

The values are identical; gradients are identical except where a window
holds tied maxima (reduce_window sends the gradient to one of them, the
reduction shares it among them; after a ReLU such ties are zeros, whose
gradient is zero either way). Other windows, strides and paddings fall back
to Flax's own ``pool``. The swap is scoped: :func:`fast_pooling` patches
``flax.linen.pooling.pool`` for the duration of a trace and restores it,
so code that does not train through ``train_candidate`` sees Flax unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax.linen import pooling as _flax_pooling
from jax import lax

from cenas_jax.train.patching import ReentrantPatch

_ORIGINAL_POOL = _flax_pooling.pool
_REDUCTIONS = {lax.max: jnp.max, lax.min: jnp.min, lax.add: jnp.sum}


def _no_padding(padding: Any, spatial: Sequence[int], window: Sequence[int]) -> bool:
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return True
        # SAME adds no padding when every window divides its dimension.
        return padding.upper() == "SAME" and all(d % w == 0 for d, w in zip(spatial, window))
    try:
        return all(tuple(p) == (0, 0) for p in padding)
    except TypeError:
        return False


def window_pool(inputs: Any, init: Any, reduce_fn: Any, window_shape: Sequence[int], strides: Any, padding: Any) -> Any:
    """``flax.linen.pooling.pool`` with a reshape-and-reduce path for non-overlapping windows.

    inputs: (batch, spatial..., features); same arguments and result as Flax's ``pool``.
    """
    window = tuple(int(w) for w in window_shape)
    reduce = _REDUCTIONS.get(reduce_fn)
    eligible = (
        reduce is not None
        and strides is not None
        and tuple(int(s) for s in strides) == window
        and getattr(inputs, "ndim", 0) == len(window) + 2
    )
    if eligible:
        spatial = tuple(inputs.shape[1:-1])
        eligible = _no_padding(padding, spatial, window) and all(d >= w for d, w in zip(spatial, window))
    if not eligible:
        return _ORIGINAL_POOL(inputs, init, reduce_fn, window_shape, strides, padding)
    spatial = inputs.shape[1:-1]
    out = tuple(d // w for d, w in zip(spatial, window))
    # VALID drops the remainder of a dimension that the window does not divide.
    x = inputs[(slice(None),) + tuple(slice(0, o * w) for o, w in zip(out, window)) + (slice(None),)]
    shape = [inputs.shape[0]]
    for o, w in zip(out, window):
        shape += [o, w]
    shape.append(inputs.shape[-1])
    x = x.reshape(shape)
    return reduce(x, axis=tuple(2 + 2 * i for i in range(len(window))))


_PATCH = ReentrantPatch(_flax_pooling, 'pool', window_pool)


def fast_pooling(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Within the block, Flax's pooling takes :func:`window_pool` (re-entrant; restored on exit)."""
    return _PATCH(enabled)
