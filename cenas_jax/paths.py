"""Where cenas_jax keeps its caches: one root for all of them."""

from __future__ import annotations

import os
from pathlib import Path


def shipped_warm_starts() -> Path | None:
    """Where the warm starts shipped with the package are (``search/warm_starts/<key>/``), read-only: the
    adapters made by ``make warm-start`` for the quickstart. ``$CENAS_SHIPPED_WARM_STARTS`` names another
    directory; set to the empty string it turns them off (``make warm-start`` itself trains, so it does)."""
    value = os.environ.get("CENAS_SHIPPED_WARM_STARTS")
    if value is None:
        return Path(__file__).resolve().parent / "search" / "warm_starts"
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """``$CENAS_CACHE``, else ``$XDG_CACHE_HOME/cenas_jax``, else ``~/.cache/cenas_jax``.

    Under it: ``data/`` (decoded datasets), ``xla/`` (the persistent compilation cache
    of trusted processes) and ``warmstart/`` (warm-started LLM adapters).
    """
    if os.environ.get("CENAS_CACHE"):
        return Path(os.environ["CENAS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cenas_jax"
