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
