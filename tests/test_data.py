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


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the embedded-dataset tests, so that mnist5k's csv is parsed once per module."""
    return str(tmp_path_factory.mktemp("shared_cache"))


def _emb(shared_cache, **kw) -> DataConfig:
    return DataConfig(cache_dir=shared_cache, **kw)


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


def test_digits_shapes_scaling_and_split_sizes(shared_cache):
    from sklearn.datasets import load_digits

    d = load_dataset(_emb(shared_cache, name="digits", val_fraction=0.2, test_fraction=0.1))
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


def test_mnist5k_is_shuffled_and_balanced(shared_cache):
    d = load_dataset(_emb(shared_cache, name="mnist5k"))
    _check_contract(d, (28, 28, 1), 10)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 5000
    # The file is sorted by class: an unshuffled split would start with 100 zeros.
    assert len(set(d.y_train[:100].tolist())) >= 8
    assert len(set(d.y_val.tolist())) == 10 and len(set(d.y_test.tolist())) == 10
    # Real MNIST: mean grey level of the digits is about 33 (0.13 * 255).
    assert 30 < d.mean[0] < 37


def test_split_determinism_seed_dependence_and_disjointness(shared_cache):
    a = load_dataset(_emb(shared_cache, name="mnist5k", seed=3))
    b = load_dataset(_emb(shared_cache, name="mnist5k", seed=3))
    c = load_dataset(_emb(shared_cache, name="mnist5k", seed=4))
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.y_train, c.y_train)
    assert _ids(a.x_test) != _ids(c.x_test)
    tr, va, te = _ids(a.x_train), _ids(a.x_val), _ids(a.x_test)
    assert not (tr & va) and not (tr & te) and not (va & te)


def test_test_split_does_not_move_when_val_fraction_changes(shared_cache):
    a = load_dataset(_emb(shared_cache, name="digits", val_fraction=0.1))
    b = load_dataset(_emb(shared_cache, name="digits", val_fraction=0.3))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(b.y_val) > len(a.y_val)


def test_max_train_caps_train_only(shared_cache):
    full = load_dataset(_emb(shared_cache, name="digits"))
    d = load_dataset(_emb(shared_cache, name="digits", max_train=100))
    assert len(d.y_train) == 100
    np.testing.assert_array_equal(d.y_train, full.y_train[:100])
    np.testing.assert_array_equal(d.x_val, full.x_val)
    np.testing.assert_allclose(d.mean, d.x_train.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-5)


def test_dataset_is_frozen_and_read_only(shared_cache):
    d = load_dataset(_emb(shared_cache, name="digits"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        d.x_train[0, 0, 0, 0] = 1


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(_cfg(tmp_path, name="cifar11"))
    msg = str(e.value)
    assert "cifar11" in msg
    for known in ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagenette", "celeba", "folder:"):
        assert known in msg


def test_embedded_cache_is_used_and_corrupt_cache_rebuilt(tmp_path, monkeypatch):
    from cenas_jax.data import embedded

    calls = []
    real = embedded.load_digits
    monkeypatch.setattr(embedded, "load_digits", lambda: calls.append(1) or real())
    cfg = _cfg(tmp_path, name="digits")
    first = load_dataset(cfg)
    second = load_dataset(cfg)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.x_train, second.x_train)
    (entry,) = list((tmp_path / "cache").glob("digits-*.npz"))
    entry.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="rebuilding"):
        third = load_dataset(cfg)
    assert len(calls) == 2
    np.testing.assert_array_equal(first.x_train, third.x_train)
    # ...and the rebuilt entry serves the next load.
    load_dataset(cfg)
    assert len(calls) == 2


# ---------------------------------------------------------------------------
# Writers of tiny files in each real format. Every image encodes its label in its pixels
# (grey level label * 20), so a test can check that images and labels stay paired.
# ---------------------------------------------------------------------------


def _labelled_images(labels, h, w, c, start: int = 0) -> np.ndarray:
    x = np.zeros((len(labels), h, w, c), np.uint8)
    for i, y in enumerate(labels):
        x[i] = y * 20
        x[i, -1, -1, 0] = (start + i) % 256  # makes every image distinct
    return x


def _assert_paired(d: Dataset, channel: int = 0) -> None:
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        np.testing.assert_array_equal(x[:, 0, 0, channel] // 20, y)


def _write_idx(path, arr: np.ndarray) -> None:
    import gzip
    import struct

    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _write_mnist(directory, n_train=40, n_test=10, gz=True, size=12) -> None:
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split, n, start in (("train", n_train, 0), ("t10k", n_test, n_train)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        _write_idx(directory / f"{split}-images-idx3-ubyte{ext}", _labelled_images(y, size, size, 1, start)[..., 0])
        _write_idx(directory / f"{split}-labels-idx1-ubyte{ext}", y)


def _write_cifar(directory, files_and_counts, label_key: str, num_classes: int, protocol: int = 2) -> None:
    import pickle

    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in files_and_counts:
        y = rng.integers(0, num_classes, n)
        chw = np.zeros((n, 3, 32, 32), np.uint8)
        chw[:, 0] = (y % 12 * 20)[:, None, None]  # red encodes the label (mod 12 keeps it in uint8)
        chw[:, 1] = 100
        chw[:, 2] = 200
        chw[:, 0, 0, 1] = 255  # row 0, column 1: checks the row-major HW order
        batch = {b"data": chw.reshape(n, 3072), label_key.encode(): y.tolist(), b"batch_label": b"test"}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)


def _write_svhn(directory, n_train=20, n_test=8) -> None:
    import scipy.io

    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        digit = np.arange(n) % 10
        y = np.where(digit == 0, 10, digit).reshape(n, 1).astype(np.uint8)  # SVHN writes the digit 0 as 10
        x = _labelled_images(digit, 32, 32, 3).transpose(1, 2, 3, 0)
        scipy.io.savemat(directory / name, {"X": x, "y": y})


_COLOURS = [(230, 20, 20), (20, 20, 230), (20, 230, 20)]


def _write_image(path, colour, size=(40, 30), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    value = colour if mode == "RGB" else colour[0]
    Image.new(mode, size, value).save(path)


def _write_class_folders(root, per_class, classes=("cat", "dog"), suffix=".JPEG", mode="RGB", start=0) -> None:
    for k, cls in enumerate(classes):
        for i in range(per_class):
            _write_image(root / cls / f"img{start + i:03d}{suffix}", _COLOURS[k], size=(40 + i, 30), mode=mode)


_CELEBA_ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Male", "Smiling"]


def _write_celeba(root, n=12, partition=True):
    males = [i % 3 == 0 for i in range(n)]
    lines = [str(n), " ".join(_CELEBA_ATTRS)]
    for i, male in enumerate(males):
        name = f"{i + 1:06d}.jpg"
        _write_image(root / "img_align_celeba" / name, (230, 230, 230) if male else (20, 20, 20), size=(36, 44))
        lines.append(f"{name} -1  1 {'1' if male else '-1'} -1")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        parts = [0] * (n - 4) + [1, 1, 2, 2]
        (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts)))
    return np.asarray(males, np.int32)


# ---------------------------------------------------------------------------
# On-disk formats through the real readers
# ---------------------------------------------------------------------------


def test_mnist_idx_gz_in_subdir_and_fashion_raw_in_data_dir(tmp_path):
    data = tmp_path / "data"
    _write_mnist(data / "mnist", n_train=40, n_test=10, gz=True)
    d = load_dataset(_cfg(tmp_path, name="mnist", data_dir=str(data), val_fraction=0.25))
    _check_contract(d, (12, 12, 1), 10)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (30, 10, 10)  # official test kept, val from train
    _assert_paired(d)

    raw = tmp_path / "raw"
    _write_mnist(raw, n_train=20, n_test=6, gz=False)
    f = load_dataset(_cfg(tmp_path, name="fashion_mnist", data_dir=str(raw), val_fraction=0.25))
    assert (len(f.y_train), len(f.y_val), len(f.y_test)) == (15, 5, 6)
    assert f.class_names[9] == "Ankle boot"
    _assert_paired(f)


def test_official_test_split_is_fixed_and_val_is_carved_from_train(tmp_path):
    data = tmp_path / "data"
    _write_mnist(data / "mnist", n_train=60, n_test=10)
    a = load_dataset(_cfg(tmp_path, name="mnist", data_dir=str(data), seed=0))
    b = load_dataset(_cfg(tmp_path, name="mnist", data_dir=str(data), seed=1))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert _ids(a.x_val) != _ids(b.x_val)
    assert not (_ids(a.x_train) & _ids(a.x_val)) and not (_ids(a.x_train) & _ids(a.x_test))
    assert len(_ids(a.x_train) | _ids(a.x_val)) == 60


def test_cifar10_and_cifar100_pickles(tmp_path):
    data = tmp_path / "data"
    _write_cifar(data / "cifar-10-batches-py", [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)], "labels", 10)
    d = load_dataset(_cfg(tmp_path, name="cifar10", data_dir=str(data), val_fraction=0.2))
    _check_contract(d, (32, 32, 3), 10)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (16, 4, 6)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        np.testing.assert_array_equal(x[:, 5, 5, 0], y % 12 * 20)
        assert (x[:, :, :, 1] == 100).all() and (x[:, :, :, 2] == 200).all()
        assert (x[:, 0, 1, 0] == 255).all() and (x[:, 1, 0, 0] != 255).all()

    # Re-pickled copies use newer protocols (5 stores arrays through numpy's _frombuffer).
    _write_cifar(data / "cifar-100-python", [("train", 30), ("test", 10)], "fine_labels", 100, protocol=5)
    c = load_dataset(_cfg(tmp_path, name="cifar100", data_dir=str(data)))
    _check_contract(c, (32, 32, 3), 100)
    assert len(c.y_train) + len(c.y_val) == 30 and len(c.y_test) == 10
    assert c.y_train.max() > 9  # the fine labels, not the 20 coarse ones


def test_svhn_mat_label_10_is_zero(tmp_path):
    data = tmp_path / "data"
    _write_svhn(data / "svhn")
    d = load_dataset(_cfg(tmp_path, name="svhn", data_dir=str(data), val_fraction=0.25))
    _check_contract(d, (32, 32, 3), 10)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (15, 5, 8)
    assert 0 in d.y_test and 10 not in d.y_test
    _assert_paired(d)


def test_imagenette_folders_resized_with_official_val_as_test(tmp_path):
    root = tmp_path / "data" / "imagenette2-160"
    classes = ("n01440764", "n02102040", "n02979186")
    _write_class_folders(root / "train", 5, classes)
    _write_class_folders(root / "val", 2, classes)
    d = load_dataset(_cfg(tmp_path, name="imagenette", data_dir=str(tmp_path / "data"), image_size=16, val_fraction=0.2))
    _check_contract(d, (16, 16, 3), 3)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (12, 3, 6)
    assert d.class_names == classes
    # Colour survives decoding: class k is _COLOURS[k] (JPEG is lossy, so within a few grey levels).
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        centre = x[:, 8, 8, :].astype(int)
        np.testing.assert_allclose(centre, np.asarray(_COLOURS)[y], atol=12)


def test_user_folder_pool_grey_png_and_split_layout(tmp_path):
    root = tmp_path / "mine"
    _write_class_folders(root, 10, ("a", "b"), suffix=".png", mode="L")
    d = load_dataset(_cfg(tmp_path, name=f"folder:{root}", image_size=8, val_fraction=0.2, test_fraction=0.2))
    _check_contract(d, (8, 8, 1), 2)  # all grey: one channel
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (12, 4, 4)
    np.testing.assert_array_equal(d.x_train[:, 4, 4, 0], np.asarray([_COLOURS[0][0], _COLOURS[1][0]])[d.y_train])
    assert d.name == f"folder:{root}"

    split = tmp_path / "mine_split"
    _write_class_folders(split / "train", 4, ("a", "b"), suffix=".png")
    _write_class_folders(split / "val", 2, ("a", "b"), suffix=".png")
    _write_class_folders(split / "test", 3, ("a", "b"), suffix=".png")
    s = load_dataset(_cfg(tmp_path, name=f"folder:{split}", image_size=8))
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (8, 4, 6)  # shipped val kept
    assert s.input_shape == (8, 8, 3)


def test_celeba_male_attribute_with_and_without_partition(tmp_path):
    root = tmp_path / "data" / "celeba"
    males = _write_celeba(root, n=12, partition=True)
    d = load_dataset(_cfg(tmp_path, name="celeba", data_dir=str(tmp_path / "data"), image_size=16))
    _check_contract(d, (16, 16, 3), 2)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (8, 2, 2)
    np.testing.assert_array_equal(d.y_test, males[-2:])
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        np.testing.assert_array_equal(x[:, 8, 8, 0] > 128, y == 1)

    (root / "list_eval_partition.txt").unlink()
    p = load_dataset(_cfg(tmp_path, name="celeba", data_dir=str(tmp_path / "data"), image_size=16, val_fraction=0.25, test_fraction=0.25))
    assert (len(p.y_train), len(p.y_val), len(p.y_test)) == (6, 3, 3)
    assert sorted(np.concatenate([p.y_train, p.y_val, p.y_test]).tolist()) == sorted(males.tolist())


# ---------------------------------------------------------------------------
# Errors name the file and the format expected
# ---------------------------------------------------------------------------


def _error(tmp_path, **kw) -> str:
    with pytest.raises(UserError) as e:
        load_dataset(_cfg(tmp_path, **kw))
    return str(e.value)


def test_missing_files_are_named(tmp_path):
    data = tmp_path / "data"
    _write_mnist(data / "mnist")
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    msg = _error(tmp_path, name="mnist", data_dir=str(data))
    assert str(data / "mnist" / "t10k-labels-idx1-ubyte") in msg and "IDX" in msg

    msg = _error(tmp_path, name="cifar10", data_dir=str(data))
    assert str(data / "cifar-10-batches-py") in msg and "pickle" in msg

    msg = _error(tmp_path, name="svhn", data_dir=None)
    assert "--data-dir" in msg and "svhn/{train,test}_32x32.mat" in msg

    (data / "celeba" / "img_align_celeba").mkdir(parents=True)
    msg = _error(tmp_path, name="celeba", data_dir=str(data))
    assert str(data / "celeba" / "list_attr_celeba.txt") in msg

    msg = _error(tmp_path, name=f"folder:{tmp_path / 'nowhere'}")
    assert str(tmp_path / "nowhere") in msg and "class" in msg


def test_malformed_files_are_named(tmp_path):
    import pickle

    data = tmp_path / "data"
    _write_mnist(data / "mnist", gz=False)
    bad = data / "mnist" / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + bad.read_bytes()[4:])  # float magic
    msg = _error(tmp_path, name="mnist", data_dir=str(data))
    assert str(bad) in msg and "IDX" in msg

    _write_mnist(data / "mnist", gz=False)
    truncated = data / "mnist" / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-7])
    msg = _error(tmp_path, name="mnist", data_dir=str(data))
    assert str(truncated) in msg and "bytes" in msg

    _write_cifar(data / "cifar-100-python", [("train", 5), ("test", 5)], "fine_labels", 100)
    (data / "cifar-100-python" / "test").write_bytes(b"this is not a pickle")
    msg = _error(tmp_path, name="cifar100", data_dir=str(data))
    assert str(data / "cifar-100-python" / "test") in msg and "fine_labels" in msg

    # A doctored pickle must not run code: its global is refused and the file named.
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(data / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    msg = _error(tmp_path, name="cifar100", data_dir=str(data))
    assert "not allowed" in msg and str(data / "cifar-100-python" / "test") in msg

    (data / "svhn").mkdir()
    (data / "svhn" / "train_32x32.mat").write_text("not matlab")
    (data / "svhn" / "test_32x32.mat").write_text("not matlab")
    msg = _error(tmp_path, name="svhn", data_dir=str(data))
    assert str(data / "svhn" / "train_32x32.mat") in msg and ".mat" in msg

    root = data / "celeba"
    _write_celeba(root, n=6, partition=False)
    attr = root / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("Male", "Female"))
    msg = _error(tmp_path, name="celeba", data_dir=str(data), image_size=8)
    assert str(attr) in msg and "Male" in msg
    _write_celeba(root, n=6, partition=False)
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    msg = _error(tmp_path, name="celeba", data_dir=str(data), image_size=8)
    assert str(root / "img_align_celeba" / "000003.jpg") in msg and "JPEG" in msg


# ---------------------------------------------------------------------------
# Cache, listing, CLI
# ---------------------------------------------------------------------------


def test_decoded_images_are_cached(tmp_path, monkeypatch):
    from cenas_jax.data import images

    calls = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    root = tmp_path / "mine"
    _write_class_folders(root, 3, ("a", "b"), suffix=".png")
    cfg = _cfg(tmp_path, name=f"folder:{root}", image_size=8)
    first = load_dataset(cfg)
    assert len(calls) == 6
    second = load_dataset(cfg)
    assert len(calls) == 6  # served from the cache: nothing decoded
    np.testing.assert_array_equal(first.x_train, second.x_train)
    load_dataset(_cfg(tmp_path, name=f"folder:{root}", image_size=12))
    assert len(calls) == 12  # another size is another entry
    _write_image(root / "a" / "extra.png", _COLOURS[0])
    grown = load_dataset(cfg)
    assert len(calls) == 19  # a new file changes the key
    assert len(grown.y_train) + len(grown.y_val) + len(grown.y_test) == 7


def test_list_datasets_reports_availability_and_sizes(tmp_path):
    data = tmp_path / "data"
    _write_mnist(data / "mnist", n_train=40, n_test=10)
    _write_svhn(data / "svhn", n_train=20, n_test=8)
    _write_cifar(data / "cifar-10-batches-py", [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)], "labels", 10)
    _write_celeba(data / "celeba", n=6)
    infos = {i.name: i for i in list_datasets(str(data), image_size=32)}
    assert infos["digits"].available and infos["digits"].num_examples == 1797
    assert infos["mnist"].available and infos["mnist"].num_examples == 50 and infos["mnist"].input_shape == (12, 12, 1)
    assert infos["svhn"].available and infos["svhn"].num_examples == 28
    assert infos["cifar10"].available and infos["cifar10"].num_examples == 13
    assert infos["celeba"].available and infos["celeba"].input_shape == (32, 32, 3) and infos["celeba"].num_examples == 6
    assert not infos["cifar100"].available and "cifar-100-python" in infos["cifar100"].note
    assert not infos["imagenette"].available
    assert infos["mnist"].path == str(data / "mnist")
    assert {i.name for i in list_datasets(None) if i.available} == {"digits", "mnist5k"}


def test_cli_datasets_table(tmp_path, capsys):
    from cenas_jax.cli import main

    data = tmp_path / "data"
    _write_mnist(data / "mnist", n_train=40, n_test=10)
    assert main(["datasets", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith(" ")}
    assert rows["mnist"][1:6] == ["disk", "yes", "12x12x1", "10", "50"]
    assert rows["mnist5k"][1:6] == ["embedded", "yes", "28x28x1", "10", "5000"]
    assert rows["cifar10"][1:3] == ["disk", "no"]
    assert "cifar-10-batches-py/" in out and "folder:" in out
    assert main(["datasets", "--data-dir", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
