"""Where cenas_jax keeps its caches: one root for all of them."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CENAS_CACHE``, else ``$XDG_CACHE_HOME/cenas_jax``, else ``~/.cache/cenas_jax``.

    Under it: ``data/`` (decoded datasets), ``xla/`` (the persistent compilation cache
    of trusted processes) and ``warmstart/`` (warm-started LLM adapters).
    """
    if os.environ.get("CENAS_CACHE"):
        return Path(os.environ["CENAS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cenas_jax"
