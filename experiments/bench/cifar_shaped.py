"""The paper's proxy regime without CIFAR-10 on disk: a 50,000-image 32x32x3 training set made from mnist5k.

Each training image is an mnist5k training digit, zero-padded from 28x28 to 36x36, cut back to 32x32 at a
random offset (a shift of up to 2 pixels each way) and tiled over three channels; the 50,000 are drawn
with replacement. Validation keeps mnist5k's own validation digits, centred. The shapes, the step count
(781 steps of 64 per epoch) and so the cost of a proxy epoch are CIFAR-10's; the task is easier.
With a real CIFAR-10 directory (``cifar-10-batches-py`` under ``data_dir``) that is used instead.

``cifar_shaped`` builds the set in memory. The sandbox's workers cannot take an in-memory set: the
Evaluator loads its dataset by ``DataConfig`` and exports it to them. ``paper_data_config`` therefore
writes the set once as a CIFAR-10 directory (the python pickle batches the data layer reads,
``cenas_jax/data/ondisk.py``) under a cache directory and returns the ``DataConfig`` that loads it back
with exactly these splits: ``load_dataset(cfg).x_train`` is the set's training images, in order (50,000:
781 steps of 64), ``x_val`` its validation images. A second call with the same inputs reuses the
directory.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np

from cenas_jax.config import DataConfig
from cenas_jax.data import cache, embedded, load_dataset
from cenas_jax.data.catalog import resolve
from cenas_jax.data.dataset import Dataset, channel_stats
from cenas_jax.data.splits import carve_val

CIFAR_TRAIN = 50_000
CIFAR_DIR = "cifar-10-batches-py"
MANIFEST = "bench.json"  # written last: a directory without it is incomplete and rebuilt
_RECIPE = 1  # bump when the images made from mnist5k change


def _to_cifar_shape(x_NHW1: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    n = x_NHW1.shape[0]
    padded = np.zeros((n, 36, 36), np.uint8)
    padded[:, 4:32, 4:32] = x_NHW1[..., 0]
    out = np.empty((n, 32, 32), np.uint8)
    for i in range(n):
        dy, dx = (2, 2) if offsets is None else offsets[i]
        out[i] = padded[i, dy:dy + 32, dx:dx + 32]
    return np.repeat(out[..., None], 3, axis=-1)


def cifar_shaped(seed: int = 0, data_dir: str | None = None, n_train: int = CIFAR_TRAIN) -> Dataset:
    """The CIFAR-10-shaped training set described above (or CIFAR-10 itself from ``data_dir``)."""
    if data_dir:
        return load_dataset(DataConfig(name="cifar10", data_dir=data_dir))
    src = load_dataset(DataConfig(name="mnist5k"))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(src.y_train), n_train)
    x_train = _to_cifar_shape(src.x_train[pick], rng.integers(0, 5, (n_train, 2)))
    x_val, x_test = _to_cifar_shape(src.x_val, None), _to_cifar_shape(src.x_test, None)
    mean, std = channel_stats(x_train)
    return Dataset(name="mnist5k-as-cifar10", x_train=x_train, y_train=src.y_train[pick].astype(np.int32),
                   x_val=x_val, y_val=src.y_val, x_test=x_test, y_test=src.y_test, num_classes=src.num_classes,
                   mean=mean, std=std)


# ---------------------------------------------------------------------------
# On disk, for the sandbox
# ---------------------------------------------------------------------------


def _write_batch(path: Path, x: np.ndarray, y: np.ndarray, label: str) -> None:
    """One CIFAR python pickle: 'data' uint8 (N, 3072), channel-major rows; 'labels' a list of ints."""
    data = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))
    with open(path, "wb") as f:
        pickle.dump({"batch_label": label, "labels": [int(v) for v in y], "data": data}, f, protocol=4)


def write_cifar10_dir(root: Path, train: tuple, val: tuple, test: tuple, seed: int = 0) -> DataConfig:
    """Write (x, y) splits of 32x32x3 uint8 images as ``root/cifar-10-batches-py``; return the config that loads them.

    The data layer reads a CIFAR-10 directory as one training pool and carves validation out of it
    (``splits.carve_val``). So the training batches hold the training and validation images together,
    each at the position where that carve, for the returned ``val_fraction`` and ``seed``, puts it back:
    the loaded ``x_train`` is ``train``'s images in order and ``x_val`` is ``val``'s. ``test_batch`` holds ``test``.
    """
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train, val, test
    for name, x in (("train", x_tr), ("val", x_va), ("test", x_te)):
        if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3):
            raise ValueError(f"{name} images are {x.dtype}{x.shape}; CIFAR-10 batches hold uint8 (N, 32, 32, 3)")
    n = len(y_tr) + len(y_va)
    val_fraction = len(y_va) / n
    tr_at, va_at = carve_val(n, val_fraction, seed)
    if len(va_at) != len(y_va):  # the carve rounds val_fraction * n: it must give back the count
        raise ValueError(f"a carve of {n} at {val_fraction} gives {len(va_at)} validation images, not {len(y_va)}")
    x = np.empty((n, 32, 32, 3), np.uint8)
    y = np.empty((n,), np.int64)
    x[tr_at], y[tr_at] = x_tr, y_tr
    x[va_at], y[va_at] = x_va, y_va
    out = root / CIFAR_DIR
    out.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n), 5), start=1):
        _write_batch(out / f"data_batch_{i}", x[part], y[part], f"training batch {i} of 5")
    _write_batch(out / "test_batch", x_te, y_te, "testing batch 1 of 1")
    return DataConfig(name="cifar10", data_dir=str(root), seed=seed, val_fraction=val_fraction)


def _source_splits(data_dir: str | None, n_train: int, seed: int, cache_dir: Path) -> tuple[tuple, tuple, tuple]:
    """(train, val, test) as (x, y): made from mnist5k, or CIFAR-10's own training images with its test batch
    as validation (so that the whole 50,000 train, as in the paper's regime)."""
    if data_dir is None:
        ds = cifar_shaped(seed=seed, n_train=n_train)
        return (ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)
    # val_fraction 0: every shipped training image stays in the (shuffled) training split
    real = load_dataset(DataConfig(name="cifar10", data_dir=data_dir, seed=seed, val_fraction=0.0,
                                   cache_dir=str(cache_dir / "arrays")))
    if len(real.y_train) < n_train:
        raise ValueError(f"{data_dir}: CIFAR-10 has {len(real.y_train)} training images, fewer than {n_train}")
    return (real.x_train[:n_train], real.y_train[:n_train]), (real.x_test, real.y_test), (real.x_test, real.y_test)


def _source_key(data_dir: str | None, n_train: int, seed: int) -> str:
    if data_dir is None:
        files = cache.fingerprint([embedded.mnist5k_source()])
        return cache.cache_key(kind="mnist5k-as-cifar10", recipe=_RECIPE, files=files, n_train=n_train, seed=seed)
    spec = resolve("cifar10")
    root = spec.locate(Path(os.path.expanduser(data_dir)))
    files = cache.fingerprint(spec.sources(root))
    return cache.cache_key(kind="cifar10", root=str(root.resolve()), files=files, n_train=n_train, seed=seed)


def paper_data_config(cache_dir: str | os.PathLike, data_dir: str | None = None, n_train: int = CIFAR_TRAIN,
                      seed: int = 0) -> tuple[DataConfig, bool]:
    """(the ``DataConfig`` of the paper regime's dataset, whether it was built now).

    The dataset is written once under ``cache_dir`` (``<cache_dir>/<kind>-<key>/cifar-10-batches-py``,
    keyed by its sources, ``n_train`` and ``seed``); the data layer's decoded-array cache goes to
    ``<cache_dir>/arrays``. ``data_dir``: a directory holding a real ``cifar-10-batches-py``.
    """
    cache_dir = Path(cache_dir).expanduser().resolve()
    key = _source_key(data_dir, n_train, seed)
    target = cache_dir / f"{'cifar10' if data_dir else 'mnist5k-as-cifar10'}-{n_train}-{key}"
    manifest = target / MANIFEST
    arrays = str(cache_dir / "arrays")
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
            return DataConfig(name="cifar10", data_dir=str(target), seed=int(m["seed"]),
                              val_fraction=float(m["val_fraction"]), cache_dir=arrays), False
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: rebuilt below
    train, val, test = _source_splits(data_dir, n_train, seed, cache_dir)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = write_cifar10_dir(tmp, train, val, test, seed)
    (tmp / MANIFEST).write_text(json.dumps({"seed": cfg.seed, "val_fraction": cfg.val_fraction, "n_train": len(train[1]),
                                            "n_val": len(val[1]), "source": data_dir or "mnist5k"}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return DataConfig(name="cifar10", data_dir=str(target), seed=cfg.seed, val_fraction=cfg.val_fraction,
                      cache_dir=arrays), True
