"""Datasets: embedded and on-disk formats through the real readers, splits, cache, errors, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cenas_jax.config import DataConfig
from cenas_jax.data import Dataset, list_datasets, load_dataset
from cenas_jax.errors import UserError


def _cfg(tmp_path, **kw) -> DataConfig:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return DataConfig(**kw)


def _ids(x: np.ndarray) -> set[bytes]:
    """Identity of each image by its bytes (embedded sets hold no exact duplicates across splits by design)."""
    return {row.tobytes() for row in x}


def _check_contract(d: Dataset, shape, num_classes) -> None:
    assert d.input_shape == shape
    assert d.num_classes == num_classes
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == shape
        assert y.dtype == np.int32 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() < num_classes
    assert d.mean.dtype == np.float32 and d.mean.shape == (shape[2],)
    assert d.std.dtype == np.float32 and d.std.shape == (shape[2],)
    x = d.x_train.astype(np.float64)
    np.testing.assert_allclose(d.mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(d.std, np.maximum(x.std(axis=(0, 1, 2)), 1.0), rtol=1e-4)


# ---------------------------------------------------------------------------
# Embedded
# ---------------------------------------------------------------------------


def test_digits_shapes_scaling_and_split_sizes(tmp_path):
    from sklearn.datasets import load_digits

    d = load_dataset(_cfg(tmp_path, name="digits", val_fraction=0.2, test_fraction=0.1))
    _check_contract(d, (8, 8, 1), 10)
    n = 1797
    assert len(d.y_test) == round(0.1 * n) and len(d.y_val) == round(0.2 * n)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == n
    # 0..16 scaled to 0..255: the maximum grey value 16 becomes 255, and each image matches sklearn's.
    assert d.x_train.max() == 255
    sk = load_digits()
    scaled = np.rint(sk.images * 255 / 16).astype(np.uint8)
    lookup = {img.tobytes(): int(t) for img, t in zip(scaled, sk.target)}
    for img, label in zip(d.x_val[:50, ..., 0], d.y_val[:50]):
        assert lookup[img.tobytes()] == label


def test_mnist5k_is_shuffled_and_balanced(tmp_path):
    d = load_dataset(_cfg(tmp_path, name="mnist5k"))
    _check_contract(d, (28, 28, 1), 10)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 5000
    # The file is sorted by class: an unshuffled split would start with 100 zeros.
    assert len(set(d.y_train[:100].tolist())) >= 8
    assert len(set(d.y_val.tolist())) == 10 and len(set(d.y_test.tolist())) == 10
    # Real MNIST: mean grey level of the digits is about 33 (0.13 * 255).
    assert 30 < d.mean[0] < 37


def test_split_determinism_seed_dependence_and_disjointness(tmp_path):
    a = load_dataset(_cfg(tmp_path, name="mnist5k", seed=3))
    b = load_dataset(_cfg(tmp_path, name="mnist5k", seed=3))
    c = load_dataset(_cfg(tmp_path, name="mnist5k", seed=4))
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.y_train, c.y_train)
    assert _ids(a.x_test) != _ids(c.x_test)
    tr, va, te = _ids(a.x_train), _ids(a.x_val), _ids(a.x_test)
    assert not (tr & va) and not (tr & te) and not (va & te)


def test_test_split_does_not_move_when_val_fraction_changes(tmp_path):
    a = load_dataset(_cfg(tmp_path, name="digits", val_fraction=0.1))
    b = load_dataset(_cfg(tmp_path, name="digits", val_fraction=0.3))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(b.y_val) > len(a.y_val)


def test_max_train_caps_train_only(tmp_path):
    full = load_dataset(_cfg(tmp_path, name="digits"))
    d = load_dataset(_cfg(tmp_path, name="digits", max_train=100))
    assert len(d.y_train) == 100
    np.testing.assert_array_equal(d.y_train, full.y_train[:100])
    np.testing.assert_array_equal(d.x_val, full.x_val)
    np.testing.assert_allclose(d.mean, d.x_train.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-5)


def test_dataset_is_frozen_and_read_only(tmp_path):
    d = load_dataset(_cfg(tmp_path, name="digits"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        d.x_train[0, 0, 0, 0] = 1


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(_cfg(tmp_path, name="cifar11"))
    msg = str(e.value)
    assert "cifar11" in msg
    for known in ("digits", "mnist5k", "folder:"):
        assert known in msg


def test_embedded_cache_is_used_and_corrupt_cache_rebuilt(tmp_path, monkeypatch):
    from cenas_jax.data import embedded

    calls = []
    real = embedded.load_mnist5k
    monkeypatch.setattr(embedded, "load_mnist5k", lambda: calls.append(1) or real())
    cfg = _cfg(tmp_path, name="mnist5k")
    first = load_dataset(cfg)
    second = load_dataset(cfg)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.x_train, second.x_train)
    (entry,) = list((tmp_path / "cache").glob("mnist5k-*.npz"))
    entry.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="rebuilding"):
        third = load_dataset(cfg)
    assert len(calls) == 2
    np.testing.assert_array_equal(first.x_train, third.x_train)
    # ...and the rebuilt entry serves the next load.
    load_dataset(cfg)
    assert len(calls) == 2
