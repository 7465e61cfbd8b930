"""The on-disk datasets: where each one's files are looked for under ``data_dir``, and how they are read.

Layouts (relative to ``data_dir``; the first directory that holds every file wins):

- ``mnist`` / ``fashion_mnist``: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in
  ``mnist/`` (``fashion_mnist/``, ``fashion-mnist/``), torchvision's ``MNIST/raw/``
  (``FashionMNIST/raw/``), or ``data_dir`` itself.
- ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch}``.
- ``cifar100``: ``cifar-100-python/{train,test}``, the 100 fine labels.
- ``svhn``: ``svhn/{train,test}_32x32.mat`` (or in ``data_dir``); label 10 is the digit 0.
- ``imagenette``: ``imagenette2-160/{train,val}/<class>/*.JPEG`` (also ``imagenette2-320``,
  ``imagenette2``, ``imagenette``); the official ``val`` is the test split.
- ``celeba``: ``celeba/img_align_celeba/*.jpg`` + ``celeba/list_attr_celeba.txt`` (label: the
  ``Male`` attribute, -1/1 -> 0/1), with ``list_eval_partition.txt`` used when present.
- ``folder:PATH``: ``PATH/<class>/<images>`` (one pool), or ``PATH/train/<class>/...`` with
  ``PATH/val/...`` and/or ``PATH/test/...``.

Formats that ship a test split keep it; the image-folder datasets are resized to ``image_size``.
Every on-disk dataset is read once and then served from the array cache (``cache.py``): decoding
CIFAR's latin-1 pickles or transposing SVHN's (H, W, C, N) arrays costs seconds, and every sandbox
worker loads the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cenas_jax.data import formats, images
from cenas_jax.data.spec import Probe, Shipped, Spec
from cenas_jax.errors import UserError

# ---------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------


def _require_data_dir(name: str, data_dir: Path | None, expected: str) -> Path:
    if data_dir is None:
        raise UserError(f"{name} is an on-disk dataset: set --data-dir (data.data_dir) to the directory holding {expected}")
    if not data_dir.is_dir():
        raise UserError(f"{name}: data directory not found: {data_dir}; expected it to hold {expected}")
    return data_dir


def _pick(directory: Path, alternatives: tuple[str, ...]) -> Path | None:
    for a in alternatives:
        if (directory / a).exists():
            return directory / a
    return None


def _find_dir(
    name: str, data_dir: Path | None, candidates: tuple[str, ...], required: tuple[tuple[str, ...], ...], expected: str
) -> Path:
    """The first candidate directory holding every required file (each given as alternative names)."""
    data_dir = _require_data_dir(name, data_dir, expected)
    best: tuple[Path, list[tuple[str, ...]]] | None = None
    looked = []
    for c in candidates:
        d = data_dir / c if c else data_dir
        looked.append(str(d))
        missing = [alts for alts in required if _pick(d, alts) is None]
        if not missing:
            return d
        if d.is_dir() and len(missing) < len(required) and (best is None or len(missing) < len(best[1])):
            best = (d, missing)
    if best is not None:  # a partial copy: name the first file it lacks
        d, missing = best
        others = f" (nor {', '.join(missing[0][1:])})" if len(missing[0]) > 1 else ""
        raise UserError(f"{name}: file not found: {d / missing[0][0]}{others}; expected {expected}")
    raise UserError(f"{name}: not found; looked in {', '.join(looked)}; expected {expected}")


def _check_labels(path: Path, y: np.ndarray, num_classes: int) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"malformed {path}: labels in [{y.min()}, {y.max()}], expected 0..{num_classes - 1}")


# ---------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX)
# ---------------------------------------------------------------------------

_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_alternatives(stem: str) -> tuple[str, ...]:
    dotted = stem.replace("-idx", ".idx")  # some mirrors write train-images.idx3-ubyte
    return (stem, stem + ".gz", dotted, dotted + ".gz")


_IDX_REQUIRED = tuple(_idx_alternatives(s) for s in _IDX_STEMS)
_IDX_EXPECTED = (
    "{dir}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (" + formats.IDX_FORMAT + ")"
)


def _idx_spec(name: str, description: str, candidates: tuple[str, ...], class_names: tuple[str, ...]) -> Spec:
    expected = _IDX_EXPECTED.format(dir=candidates[0])
    layout = f"{candidates[0]}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]"

    def locate(data_dir: Path | None) -> Path:
        return _find_dir(name, data_dir, candidates, _IDX_REQUIRED, expected)

    def files(root: Path) -> list[Path]:
        return [_pick(root, alts) for alts in _IDX_REQUIRED]  # type: ignore[misc]

    def read_pair(img_path: Path, lbl_path: Path) -> tuple[np.ndarray, np.ndarray]:
        x = formats.read_idx(img_path, 3)
        y = formats.read_idx(lbl_path, 1).astype(np.int32)
        if len(x) != len(y):
            raise UserError(f"malformed {img_path}: {len(x)} images but {lbl_path} holds {len(y)} labels")
        _check_labels(lbl_path, y, 10)
        return x[..., None], y

    def read(root: Path, image_size: int) -> Shipped:
        tri, trl, tei, tel = files(root)
        x_tr, y_tr = read_pair(tri, trl)
        x_te, y_te = read_pair(tei, tel)
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise UserError(f"malformed {tei}: images {x_te.shape[1:3]}, training images {x_tr.shape[1:3]}")
        return Shipped(x_tr, y_tr, 10, x_test=x_te, y_test=y_te, class_names=class_names)

    def probe(root: Path, image_size: int) -> Probe:
        tri, _, tei, _ = files(root)
        tr, te = formats.read_idx_header(tri), formats.read_idx_header(tei)
        return Probe(10, (tr[1], tr[2], 1) if len(tr) == 3 else None, tr[0] + te[0])

    return Spec(name, description, "disk", layout, locate, read, probe, cached=True, sources=files)


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickles)
# ---------------------------------------------------------------------------


def _cifar_spec(
    name: str,
    description: str,
    candidates: tuple[str, ...],
    train_files: tuple[str, ...],
    test_file: str,
    label_key: str,
    num_classes: int,
    meta: tuple[str, str],
) -> Spec:
    required = tuple((f,) for f in (*train_files, test_file))
    short = "data_batch_{1..5},test_batch" if len(train_files) > 1 else ",".join((*train_files, test_file))
    layout = f"{candidates[0]}/{{{short}}}"
    expected = f"{layout} ({formats.CIFAR_FORMAT.format(labels=label_key)})"

    def locate(data_dir: Path | None) -> Path:
        return _find_dir(name, data_dir, candidates, required, expected)

    def read_many(root: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for f in names:
            x, y = formats.read_cifar_batch(root / f, label_key)
            _check_labels(root / f, y, num_classes)
            parts.append((x, y))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def read(root: Path, image_size: int) -> Shipped:
        x_tr, y_tr = read_many(root, train_files)
        x_te, y_te = read_many(root, (test_file,))
        names = formats.read_label_names(root / meta[0], meta[1])
        return Shipped(x_tr, y_tr, num_classes, x_test=x_te, y_test=y_te, class_names=names if len(names) == num_classes else ())

    def probe(root: Path, image_size: int) -> Probe:
        # Pickles have no header: count the labels (about half a second for CIFAR-10).
        n = sum(len(formats.read_cifar_batch(root / f, label_key)[1]) for f in (*train_files, test_file))
        return Probe(num_classes, (32, 32, 3), n)

    def files(root: Path) -> list[Path]:
        return [root / f for f in (*train_files, test_file, meta[0]) if (root / f).is_file()]

    return Spec(name, description, "disk", layout, locate, read, probe, cached=True, sources=files)


# ---------------------------------------------------------------------------
# SVHN (.mat)
# ---------------------------------------------------------------------------

_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
_SVHN_LAYOUT = "svhn/{train,test}_32x32.mat"
_SVHN_EXPECTED = f"{_SVHN_LAYOUT} ({formats.SVHN_FORMAT})"


def _svhn_locate(data_dir: Path | None) -> Path:
    return _find_dir("svhn", data_dir, ("svhn", "SVHN", ""), tuple((f,) for f in _SVHN_FILES), _SVHN_EXPECTED)


def _svhn_read(root: Path, image_size: int) -> Shipped:
    x_tr, y_tr = formats.read_svhn_mat(root / _SVHN_FILES[0])
    x_te, y_te = formats.read_svhn_mat(root / _SVHN_FILES[1])
    return Shipped(x_tr, y_tr, 10, x_test=x_te, y_test=y_te, class_names=tuple(str(i) for i in range(10)))


def _svhn_probe(root: Path, image_size: int) -> Probe:
    return Probe(10, (32, 32, 3), sum(formats.svhn_count(root / f) for f in _SVHN_FILES))


# ---------------------------------------------------------------------------
# Image folders: ImageNette and the user's own
# ---------------------------------------------------------------------------


def _split_layout(root: Path) -> dict[str, Path] | None:
    """{'train', 'val'?, 'test'?} sub-directories when ``root`` ships splits, else None (one pool)."""
    if not (root / "train").is_dir():
        return None
    found = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    return found if len(found) > 1 else None


def _image_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and images.is_image(p)]


def read_image_folders(root: Path, image_size: int, keep_grey: bool) -> Shipped:
    """A folder of class sub-folders (one pool), or of train/ and val/ and/or test/ splits of them.

    With only val/ beside train/, val/ is the held-out split (ImageNette's layout) and becomes the
    test split; validation is then carved out of train/.
    """
    layout = _split_layout(root)
    if layout is None:
        paths, y, names = images.scan_class_folders(root)
        x = images.decode_all(paths, image_size, keep_grey, desc=f"decoding {root.name}")
        return Shipped(x, y, len(names), class_names=names)
    tr_paths, y_tr, names = images.scan_class_folders(layout["train"])
    held = {"test": layout.get("test", layout.get("val"))}
    if "val" in layout and "test" in layout:
        held["val"] = layout["val"]
    scanned = {k: images.scan_class_folders(d, names)[:2] for k, d in held.items()}
    all_paths = tr_paths + [p for k in scanned for p in scanned[k][0]]
    # One decode for every split, so that the grey-or-colour decision is the same for all.
    x = images.decode_all(all_paths, image_size, keep_grey, desc=f"decoding {root.name}")
    n = len(tr_paths)
    parts = {}
    for k, (paths, y) in scanned.items():
        parts[k] = (x[n : n + len(paths)], y)
        n += len(paths)
    x_tr = x[: len(tr_paths)]
    val = parts.get("val", (None, None))
    return Shipped(
        x_tr, y_tr, len(names), x_test=parts["test"][0], y_test=parts["test"][1], x_val=val[0], y_val=val[1], class_names=names
    )


def _folder_probe(root: Path, image_size: int, channels: int | None) -> Probe:
    layout = _split_layout(root)
    classes = images.class_folders(layout["train"] if layout else root)
    return Probe(len(classes), (image_size, image_size, channels) if channels else None, len(_image_files(root)))


_IMAGENETTE_DIRS = ("imagenette2-160", "imagenette2-320", "imagenette2", "imagenette")
_IMAGENETTE_LAYOUT = "imagenette2-160/{train,val}/<class>/*.JPEG"
_IMAGENETTE_EXPECTED = f"{_IMAGENETTE_LAYOUT} (folders of class sub-folders of images)"


def _imagenette_locate(data_dir: Path | None) -> Path:
    return _find_dir("imagenette", data_dir, _IMAGENETTE_DIRS, (("train",), ("val",)), _IMAGENETTE_EXPECTED)


def folder_spec(name: str, path: Path) -> Spec:
    """The spec of a user's folder dataset ``folder:PATH``."""
    expected = f"{path}/<class>/<images> or {path}/{{train,val,test}}/<class>/<images>"

    def locate(data_dir: Path | None) -> Path:
        if not path.is_dir():
            raise UserError(f"{name}: directory not found: {path}; expected {expected}")
        return path

    return Spec(
        name=name,
        description="your folder of class sub-folders of images",
        source="disk",
        expected=expected,
        locate=locate,
        read=lambda root, size: read_image_folders(root, size, keep_grey=True),
        probe=lambda root, size: _folder_probe(root, size, None),
        cached=True,
        sources=_image_files,
        resized=True,
    )


# ---------------------------------------------------------------------------
# CelebA (aligned images + attribute list)
# ---------------------------------------------------------------------------

_CELEBA_ATTR = "list_attr_celeba.txt"
_CELEBA_PARTITION = "list_eval_partition.txt"
_CELEBA_IMAGES = "img_align_celeba"
_CELEBA_ATTR_FORMAT = "line 1: the image count; line 2: the 40 attribute names; then '<file> <40 values of -1/1>'"
_CELEBA_LAYOUT = f"celeba/{_CELEBA_IMAGES}/*.jpg + celeba/{_CELEBA_ATTR}"
_CELEBA_EXPECTED = f"{_CELEBA_LAYOUT} ({_CELEBA_ATTR_FORMAT})"


def _celeba_locate(data_dir: Path | None) -> Path:
    return _find_dir("celeba", data_dir, ("celeba", "CelebA", ""), ((_CELEBA_IMAGES,), (_CELEBA_ATTR,)), _CELEBA_EXPECTED)


def _celeba_image_dir(root: Path) -> Path:
    d = root / _CELEBA_IMAGES
    # Some copies nest the folder in itself (img_align_celeba/img_align_celeba/*.jpg).
    return d / _CELEBA_IMAGES if (d / _CELEBA_IMAGES).is_dir() else d


def read_celeba_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """(image file names, int32 Male labels 0/1) of ``list_attr_celeba.txt``."""
    def bad(msg: str) -> UserError:
        return UserError(f"malformed {path}: {msg}; expected {_CELEBA_ATTR_FORMAT}")

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}; expected {_CELEBA_ATTR_FORMAT}") from None
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise bad("line 1 is not the image count")
    count = int(lines[0])
    attrs = lines[1].split()
    if "Male" not in attrs:
        raise bad(f"line 2 has no 'Male' attribute (has {attrs[:5]}...)")
    col = attrs.index("Male") + 1
    files, labels = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(attrs) + 1:
            raise bad(f"line {lineno} has {len(fields) - 1} values, not {len(attrs)}")
        if fields[col] not in ("-1", "1"):
            raise bad(f"line {lineno}: Male is {fields[col]!r}, not -1 or 1")
        files.append(fields[0])
        labels.append(1 if fields[col] == "1" else 0)
    if len(files) != count:
        raise bad(f"line 1 says {count} images, the file lists {len(files)}")
    return files, np.asarray(labels, np.int32)


def read_celeba_partition(path: Path, files: list[str]) -> np.ndarray:
    """The partition (0 train, 1 val, 2 test) of each file, from ``list_eval_partition.txt``."""
    fmt = "'<file> <0|1|2>' per line (0 train, 1 val, 2 test)"
    part: dict[str, int] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}; expected {fmt}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise UserError(f"malformed {path}: line {lineno} is {line!r}; expected {fmt}")
        part[fields[0]] = int(fields[1])
    missing = [f for f in files if f not in part]
    if missing:
        raise UserError(f"malformed {path}: no partition for {len(missing)} image(s), e.g. {missing[0]}; expected {fmt}")
    return np.asarray([part[f] for f in files], np.int8)


def _celeba_sources(root: Path) -> list[Path]:
    files, _ = read_celeba_attributes(root / _CELEBA_ATTR)
    img_dir = _celeba_image_dir(root)
    extra = [root / _CELEBA_PARTITION] if (root / _CELEBA_PARTITION).is_file() else []
    return [root / _CELEBA_ATTR, *extra, *(img_dir / f for f in files)]


def _celeba_read(root: Path, image_size: int) -> Shipped:
    files, y = read_celeba_attributes(root / _CELEBA_ATTR)
    img_dir = _celeba_image_dir(root)
    x = images.decode_all([img_dir / f for f in files], image_size, keep_grey=False, desc="decoding celeba")
    names = ("female", "male")
    if not (root / _CELEBA_PARTITION).is_file():
        return Shipped(x, y, 2, class_names=names)
    part = read_celeba_partition(root / _CELEBA_PARTITION, files)
    tr, va, te = (part == 0), (part == 1), (part == 2)
    if not tr.any() or not te.any():
        raise UserError(f"malformed {root / _CELEBA_PARTITION}: needs images in partition 0 (train) and 2 (test)")
    if not va.any():  # no official validation: carve it out of train
        return Shipped(x[tr], y[tr], 2, x_test=x[te], y_test=y[te], class_names=names)
    return Shipped(x[tr], y[tr], 2, x_test=x[te], y_test=y[te], x_val=x[va], y_val=y[va], class_names=names)


def _celeba_probe(root: Path, image_size: int) -> Probe:
    path = root / _CELEBA_ATTR
    with open(path) as f:
        first = f.readline().strip()
    if not first.isdigit():
        raise UserError(f"malformed {path}: line 1 is not the image count; expected {_CELEBA_ATTR_FORMAT}")
    return Probe(2, (image_size, image_size, 3), int(first))


# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------

_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

ON_DISK: dict[str, Spec] = {
    "mnist": _idx_spec(
        "mnist", "MNIST handwritten digits (IDX)", ("mnist", "MNIST/raw", "MNIST", ""), tuple(str(i) for i in range(10))
    ),
    "fashion_mnist": _idx_spec(
        "fashion_mnist",
        "Fashion-MNIST clothing (IDX)",
        ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST", ""),
        _FASHION_NAMES,
    ),
    "cifar10": _cifar_spec(
        "cifar10",
        "CIFAR-10 (python pickle batches)",
        ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10"),
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "labels",
        10,
        ("batches.meta", "label_names"),
    ),
    "cifar100": _cifar_spec(
        "cifar100",
        "CIFAR-100, fine labels (python pickles)",
        ("cifar-100-python", "cifar100/cifar-100-python", "cifar100"),
        ("train",),
        "test",
        "fine_labels",
        100,
        ("meta", "fine_label_names"),
    ),
    "svhn": Spec(
        "svhn",
        "SVHN cropped digits (.mat)",
        "disk",
        _SVHN_LAYOUT,
        _svhn_locate,
        _svhn_read,
        _svhn_probe,
        cached=True,
        sources=lambda root: [root / f for f in _SVHN_FILES],
    ),
    "imagenette": Spec(
        "imagenette",
        "ImageNette, 10 ImageNet classes (image folders, resized)",
        "disk",
        _IMAGENETTE_LAYOUT,
        _imagenette_locate,
        lambda root, size: read_image_folders(root, size, keep_grey=False),
        lambda root, size: _folder_probe(root, size, 3),
        cached=True,
        sources=_image_files,
        resized=True,
    ),
    "celeba": Spec(
        "celeba",
        "CelebA gender: the Male attribute (aligned images, resized)",
        "disk",
        _CELEBA_LAYOUT,
        _celeba_locate,
        _celeba_read,
        _celeba_probe,
        cached=True,
        sources=_celeba_sources,
        resized=True,
    ),
}
