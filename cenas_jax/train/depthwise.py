"""Depthwise convolution as shifted multiply-adds, swapped into Flax's ``Conv`` while the trainer traces.

XLA:CPU runs grouped convolutions with one group per channel (the depthwise
convolutions of MobileNet-style candidates) and their gradients slowly:
measured on a MobileNet-style CNN (mnist, batch 64, one thread) a training
step took 73 ms against PyTorch's 18 ms. A depthwise convolution is a sum
over kernel taps of a strided slice of the padded input times one weight per
channel; those are elementwise operations whose gradients (pads and
multiplies) XLA fuses well.

:func:`fast_depthwise` replaces the ``lax`` that ``flax.linen.linear`` calls
with a proxy whose ``conv_general_dilated`` takes that path when
``feature_group_count`` equals the input channels (channel multiplier >= 1),
with Flax's channels-last layout and no dilation; every other call goes to
``jax.lax`` unchanged. Results equal the convolution's up to float rounding
(the taps are summed in another order).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen import linear as _flax_linear

from cenas_jax.train.patching import ReentrantPatch

_ORIGINAL_LAX = _flax_linear.lax


def _all_ones(v: Any) -> bool:
    return v is None or all(int(d) == 1 for d in v)


def _channels_last(dimension_numbers: Any, ndim: int) -> bool:
    """Flax's layout: lhs/out (N, spatial..., C), rhs (spatial..., I, O)."""
    if dimension_numbers is None:
        return False
    spatial = tuple(range(1, ndim - 1))
    lhs = (0, ndim - 1) + spatial
    rhs = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
    try:
        return (tuple(dimension_numbers.lhs_spec) == lhs and tuple(dimension_numbers.rhs_spec) == rhs
                and tuple(dimension_numbers.out_spec) == lhs)
    except AttributeError:
        return False


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> jax.Array:
    """Depthwise convolution: x (N, spatial..., C), kernel (k..., 1, C*m) -> (N, out spatial..., C*m)."""
    c = x.shape[-1]
    out_ch = kernel.shape[-1]
    ksize = kernel.shape[:-2]
    x = jnp.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
    if out_ch != c:  # channel multiplier m: output channel o reads input channel o // m
        x = jnp.repeat(x, out_ch // c, axis=-1)
    spatial = x.shape[1:-1]
    out = [(s - k) // st + 1 for s, k, st in zip(spatial, ksize, strides)]
    y = None
    for offs in itertools.product(*(range(k) for k in ksize)):
        start = (0,) + tuple(offs) + (0,)
        limit = (x.shape[0],) + tuple(o + (n - 1) * st + 1 for o, n, st in zip(offs, out, strides)) + (out_ch,)
        step = (1,) + tuple(strides) + (1,)
        term = jax.lax.slice(x, start, limit, step) * kernel[tuple(offs) + (0,)]
        y = term if y is None else y + term
    return y


class _LaxWithFastDepthwise:
    """``jax.lax`` with a depthwise fast path in ``conv_general_dilated`` (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_ORIGINAL_LAX, name)

    @staticmethod
    def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                             dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                             precision=None, preferred_element_type=None):
        ndim = getattr(lhs, "ndim", 0)
        c = lhs.shape[-1] if ndim else 0
        eligible = (
            ndim >= 3
            and feature_group_count > 1
            and feature_group_count == c
            and batch_group_count == 1
            and rhs.shape[-2] == 1
            and rhs.shape[-1] % c == 0
            and _all_ones(lhs_dilation)
            and _all_ones(rhs_dilation)
            and preferred_element_type is None
            and _channels_last(dimension_numbers, ndim)
        )
        if eligible:
            spatial = lhs.shape[1:-1]
            ksize = rhs.shape[:-2]
            if isinstance(padding, str):
                pads = _ORIGINAL_LAX.padtype_to_pads(spatial, ksize, window_strides, padding)
            else:
                pads = [tuple(int(v) for v in p) for p in padding]
            if all(lo >= 0 and hi >= 0 for lo, hi in pads):
                return depthwise_conv(lhs, rhs, tuple(int(s) for s in window_strides), pads)
        return _ORIGINAL_LAX.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type,
        )


_PROXY = _LaxWithFastDepthwise()


_PATCH = ReentrantPatch(_flax_linear, 'lax', _PROXY)


def fast_depthwise(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Within the block, Flax's ``Conv`` computes depthwise convolutions by :func:`depthwise_conv`."""
    return _PATCH(enabled)
