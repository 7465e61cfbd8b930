"""Decoded arrays cached once as ``.npz`` files, keyed by what they were built from.

The key is a hash of (dataset name, source path, the source files' sizes and mtimes, image size),
so editing, adding or removing a source file, or asking for another size, builds a new entry. A
cache file that cannot be read back (truncated, corrupt, wrong keys) is rebuilt, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from cenas_jax import paths as cenas_paths

DEFAULT_CACHE_DIR = Path("~/.cache/cenas_jax/data")  # when neither CENAS_CACHE nor XDG_CACHE_HOME is set


def cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(os.path.expanduser(cache_dir))
    return cenas_paths.cache_root() / "data"


def fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file, sorted: changes whenever a source file does."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return sorted(out)


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cached_arrays(
    cache_dir: str | None,
    name: str,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays stored under ``key``, or ``build()``'s result, written there first.

    A write goes to a temporary file and is renamed into place, so concurrent workers building the
    same entry never read a half-written file.
    """
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40]
    path = cache_root(cache_dir) / f"{safe}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if arrays:
                return arrays
            raise ValueError("empty archive")
        except Exception as e:  # any unreadable file is rebuilt below
            warnings.warn(f"rebuilding unreadable dataset cache {path}: {e}", stacklevel=2)
    arrays = build()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full cache directory only costs speed
        warnings.warn(f"could not write dataset cache {path}: {e}", stacklevel=2)
        tmp.unlink(missing_ok=True)
    return arrays
