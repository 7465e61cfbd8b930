"""The persistent XLA compilation cache: one switch, one directory.

Who may write the cache (DESIGN.md §3): every process that compiles with
the cache enabled reads *and writes* entries in the directory. A sandboxed
worker that runs untrusted candidate code could overwrite an entry and so
poison another candidate's compiled program. The caller decides where the
trust boundary lies:

* call :func:`enable_compile_cache` only in a trusted process (the default
  directory ``~/.cache/cenas_jax/xla`` is shared by every run of this user), or
* give each run its own directory (``TrainConfig.compile_cache_dir``, e.g.
  ``<run_dir>/xla_cache``) so that a poisoned entry cannot outlive the run, or
* set ``TrainConfig.compile_cache=False`` in sandboxed workers.

``train_candidate`` calls :func:`enable_compile_cache` itself when
``cfg.compile_cache`` is true, so the sandbox must pass ``compile_cache=False``
to workers it does not trust with a shared directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from cenas_jax.config import TrainConfig
from cenas_jax.paths import cache_root

_enabled_dir: str | None = None


def default_cache_dir() -> Path:
    """``cache_root()/xla``: ``$CENAS_CACHE/xla``, else ``$XDG_CACHE_HOME/cenas_jax/xla``, else ``~/.cache/cenas_jax/xla``."""
    return cache_root() / "xla"


def enable_compile_cache(cfg: TrainConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Turn the persistent compilation cache on for this process; return its directory.

    ``cache_dir`` wins over ``cfg.compile_cache_dir``, which wins over
    :func:`default_cache_dir`. Returns None (and changes nothing) when
    ``cfg.compile_cache`` is false. Thresholds are set to zero so that the
    sub-second compiles of small candidates are cached too. JAX fixes the
    directory at the first compile that uses the cache; calling this again
    with another directory afterwards resets JAX's cache object so the new
    directory takes effect.
    """
    global _enabled_dir
    if cfg is not None and not cfg.compile_cache:
        return None
    if cache_dir is None and cfg is not None and cfg.compile_cache_dir:
        cache_dir = cfg.compile_cache_dir
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path.expanduser().resolve()
    if _enabled_dir == str(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    if _enabled_dir is not None:
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Small candidates compile in 0.1-1 s; the default 1 s threshold would skip them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _enabled_dir = str(path)
    return path


def disable_compile_cache() -> None:
    """Turn the persistent cache off for this process (compiles stay in memory only)."""
    global _enabled_dir
    if _enabled_dir is not None:
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
    jax.config.update("jax_enable_compilation_cache", False)
    _enabled_dir = None
