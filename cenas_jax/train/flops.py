"""FLOPs of a compiled program from XLA's cost analysis."""

from __future__ import annotations

from typing import Any


def compiled_flops(compiled: Any) -> float | None:
    """Total FLOPs XLA counts for one call of ``compiled`` (None if the backend gives none).

    ``compiled`` is a ``jax.stages.Compiled``. Older JAX returned a list with one
    dict per device program; newer returns one dict.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None
