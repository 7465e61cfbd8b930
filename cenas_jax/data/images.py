"""Image files: decoding with Pillow, resizing, and the class-sub-folder layout.

Every image is decoded to RGB, centre-cropped to a square and resized to ``size`` x ``size``
(bilinear), so that images of any aspect ratio stack into one uint8 NHWC array. A folder whose
images are all grey keeps one channel.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cenas_jax.errors import UserError
from cenas_jax.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGE_FORMAT = "an image file Pillow can decode (JPEG, PNG, BMP, GIF, WebP, TIFF, PPM)"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """(uint8 (size, size, 3), was_grey) of one image file, centre-cropped and resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            # JPEG only: decode at the smallest DCT scale still >= size on both sides (several x faster).
            im.draft("RGB", (size, size))
            grey = im.mode in _GREY_MODES
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot decode {path}: {e}; expected {IMAGE_FORMAT}") from None
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8), grey


def decode_all(paths: list[Path], size: int, keep_grey: bool, desc: str = "decoding") -> np.ndarray:
    """uint8 (N, size, size, C) of ``paths`` in order; C is 1 when ``keep_grey`` and every image is grey.

    Pillow releases the GIL while it decodes and resizes, so a thread pool uses every core.
    """
    x = np.empty((len(paths), size, size, 3), np.uint8)
    all_grey = True

    def one(i: int) -> bool:
        img, grey = decode_image(paths[i], size)
        x[i] = img
        return grey

    workers = min(8, os.cpu_count() or 1) if len(paths) > 256 else 1
    progress = _progress(len(paths), desc) if len(paths) > 2000 else None
    pool = ThreadPoolExecutor(workers)
    try:
        for grey in pool.map(one, range(len(paths))):
            all_grey &= grey
            if progress is not None:
                progress.update(1)
    finally:
        # On a bad file, report it now rather than after decoding everything still queued.
        pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.close()
    if keep_grey and all_grey and len(paths):
        return np.ascontiguousarray(x[..., :1])
    return x


def _progress(total: int, desc: str):
    return progress_bar(total=total, desc=desc, unit="img")


def class_folders(root: Path) -> list[Path]:
    """The sub-directories of ``root`` that are classes (sorted by name; hidden ones skipped)."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def scan_class_folders(root: Path, class_names: tuple[str, ...] | None = None) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(image paths, int32 labels, class names) of a folder of class sub-folders of images.

    With ``class_names`` given (the training split's), the labels follow them and a class folder
    not among them is an error; otherwise the classes are the sorted sub-folder names.
    """
    if not root.is_dir():
        raise UserError(f"directory not found: {root}; expected class sub-folders of images")
    folders = class_folders(root)
    if not folders:
        raise UserError(f"no class sub-folders in {root}; expected {root}/<class>/<image files>")
    names = class_names if class_names is not None else tuple(p.name for p in folders)
    index = {n: i for i, n in enumerate(names)}
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        if folder.name not in index:
            raise UserError(f"class folder {folder} is not a class of the training split {sorted(index)}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))
        if not files:
            raise UserError(f"class folder {folder} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
        paths.extend(files)
        labels.extend([index[folder.name]] * len(files))
    return paths, np.asarray(labels, np.int32), names
