"""Numbers as text: the one formatter behind the report, the summaries and the command-line tables.

Each caller keeps its own marker for a missing number (``–`` in Markdown, ``n/a`` or ``-`` in plain-text
tables), so the text they print is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"  # a missing number in Markdown tables


def num(x: Any, spec: str = ".3f", missing: str = DASH, finite: bool = False) -> str:
    """``format(x, spec)``; ``missing`` for None and a float NaN, and for ±inf too when ``finite``."""
    if x is None or (isinstance(x, float) and (math.isnan(x) or (finite and math.isinf(x)))):
        return missing
    return format(x, spec)


def interval(lo: Any, hi: Any, spec: str = ".3f", missing: str = DASH, finite: bool = False) -> str:
    """``[lo, hi]``, each end as :func:`num` writes it."""
    return f"[{num(lo, spec, missing, finite)}, {num(hi, spec, missing, finite)}]"


def value(x: Any, nd: int = 3) -> str:
    """A count with thousands separators, any other number with ``nd`` decimals; ``–`` for None, NaN and ±inf
    (the reproduction summary's cells)."""
    return num(x, "," if isinstance(x, int) and not isinstance(x, bool) else f".{nd}f", finite=True)


def ci(lo: Any, hi: Any, nd: int = 3) -> str:
    """``[lo, hi]`` with ``nd`` decimals, each missing end (None, NaN, ±inf) as ``–``."""
    return interval(lo, hi, f".{nd}f", finite=True)


def duration(seconds: Any, missing: str = "-") -> str:
    """Wall time as a person reads it: ``1.5 h`` from an hour on, ``12 min`` from a minute on, else ``40 s``."""
    if seconds is None:
        return missing
    s = float(seconds)
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"
