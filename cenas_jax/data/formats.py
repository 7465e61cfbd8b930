"""Readers of the array formats datasets ship in: IDX (MNIST), CIFAR python pickles, SVHN .mat.

Each reader takes a full path and returns uint8 / int arrays, or raises ``UserError`` naming the
file and the format it expected. Images come back NHWC.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from cenas_jax.errors import UserError

IDX_FORMAT = "an IDX ubyte file (magic 0x0000080N, big-endian int32 dims, then uint8 data), raw or gzip"
CIFAR_FORMAT = "a CIFAR python pickle (dict with 'data': uint8 (N, 3072) and '{labels}': N ints)"
SVHN_FORMAT = "a MATLAB v5 .mat file with 'X': uint8 (32, 32, 3, N) and 'y': (N, 1) labels 1..10"


# ---------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------


def _open_maybe_gzip(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def read_idx_header(path: Path) -> tuple[int, ...]:
    """The dims of an IDX ubyte file, reading only its header."""
    try:
        with _open_maybe_gzip(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or not 1 <= head[3] <= 4:
                raise UserError(f"malformed {path}: bad magic {head.hex() or '(empty)'}; expected {IDX_FORMAT}")
            dims_raw = f.read(4 * head[3])
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e}; expected {IDX_FORMAT}") from None
    if len(dims_raw) < 4 * head[3]:
        raise UserError(f"malformed {path}: truncated header; expected {IDX_FORMAT}")
    return struct.unpack(">" + "I" * head[3], dims_raw)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX ubyte file with ``ndim`` dimensions (3: images N,H,W; 1: labels N)."""
    try:
        with _open_maybe_gzip(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e}; expected {IDX_FORMAT}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"malformed {path}: bad magic {data[:4].hex() or '(empty)'}; expected {IDX_FORMAT}")
    if data[3] != ndim:
        raise UserError(f"malformed {path}: {data[3]} dimensions, expected {ndim}; expected {IDX_FORMAT}")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = memoryview(data)[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"malformed {path}: header says {dims} = {int(np.prod(dims))} bytes, file has {len(body)}; expected {IDX_FORMAT}")
    return np.frombuffer(body, np.uint8).reshape(dims).copy()


# ---------------------------------------------------------------------------
# CIFAR python pickles
# ---------------------------------------------------------------------------

# The globals a pickled numpy array needs; anything else in a dataset pickle is refused, so that a
# doctored file cannot run code on load.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle")
        if module.startswith("numpy.core."):  # the pre-2.0 name of numpy._core
            module = "numpy._core." + module[len("numpy.core.") :]
        return getattr(importlib.import_module(module), name)


def read_pickle_dict(path: Path, expected: str) -> dict[str, object]:
    """A pickled dict with its keys as str (CIFAR pickles were written by Python 2 with byte keys)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}; expected {expected}") from None
    except Exception as e:  # any unpickling failure means the file is not what the format says
        raise UserError(f"malformed {path}: {type(e).__name__}: {e}; expected {expected}") from None
    if not isinstance(obj, dict):
        raise UserError(f"malformed {path}: holds a {type(obj).__name__}, not a dict; expected {expected}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 32, 32, 3), y int32) from one CIFAR pickle; ``label_key`` 'labels' or 'fine_labels'."""
    expected = CIFAR_FORMAT.format(labels=label_key)
    d = read_pickle_dict(path, expected)
    if "data" not in d or label_key not in d:
        raise UserError(f"malformed {path}: keys {sorted(d)}; expected {expected}")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise UserError(
            f"malformed {path}: data {data.dtype}{data.shape}, {labels.size} labels; expected {expected}"
        )
    # Rows are channel-major (1024 R, 1024 G, 1024 B), each channel row-major 32x32.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int32)


def read_label_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names from a CIFAR meta pickle, or () when the optional file is absent or unreadable."""
    if not path.is_file():
        return ()
    try:
        names = read_pickle_dict(path, "a CIFAR meta pickle").get(key, ())
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except UserError:
        return ()


# ---------------------------------------------------------------------------
# SVHN .mat
# ---------------------------------------------------------------------------


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 32, 32, 3), y int32 in 0..9) from an SVHN cropped-digits .mat; label 10 is digit 0."""
    import scipy.io

    try:
        m = scipy.io.loadmat(path, variable_names=["X", "y"])
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}; expected {SVHN_FORMAT}") from None
    except Exception as e:  # scipy raises several types for a non-.mat or an HDF5 (v7.3) file
        raise UserError(f"malformed {path}: {type(e).__name__}: {e}; expected {SVHN_FORMAT}") from None
    if "X" not in m or "y" not in m:
        raise UserError(f"malformed {path}: variables {sorted(k for k in m if not k.startswith('__'))}; expected {SVHN_FORMAT}")
    x, y = m["X"], np.asarray(m["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise UserError(f"malformed {path}: X {x.shape}, {len(y)} labels; expected {SVHN_FORMAT}")
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise UserError(f"malformed {path}: labels in [{y.min()}, {y.max()}]; expected {SVHN_FORMAT}")
    if x.dtype != np.uint8:
        raise UserError(f"malformed {path}: X is {x.dtype}; expected {SVHN_FORMAT}")
    y = np.where(y == 10, 0, y).astype(np.int32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


def svhn_count(path: Path) -> int:
    """The number of images in an SVHN .mat, from its variable headers only."""
    import scipy.io

    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
    except Exception as e:
        raise UserError(f"malformed {path}: {type(e).__name__}: {e}; expected {SVHN_FORMAT}") from None
    if "X" not in shapes or len(shapes["X"]) != 4:
        raise UserError(f"malformed {path}: variables {shapes}; expected {SVHN_FORMAT}")
    return int(shapes["X"][3])
