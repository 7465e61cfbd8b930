"""The dataset value every other module receives, and the catalogue entry ``cenas datasets`` prints."""

from __future__ import annotations

import dataclasses

import numpy as np

# Floor of the per-channel std, in [0, 255] units: a constant channel is then divided by one grey level,
# never by zero.
STD_FLOOR = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test splits of one image-classification dataset, in memory.

    Images are ``uint8`` NHWC in [0, 255]; labels are ``int32`` in [0, num_classes).
    ``mean`` and ``std`` are float32 of shape (C,), per channel, of the training split, in [0, 255]
    units; normalisation ``(x - mean) / std`` happens inside the jitted step. The test split is held
    out for final retraining and is never used by the search (which scores on validation).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def summary(self) -> str:
        h, w, c = self.input_shape
        return (
            f"{self.name}: {h}x{w}x{c}, {self.num_classes} classes, "
            f"train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)}"
        )


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One row of ``cenas datasets``: what a dataset is, what files it needs, whether they are here.

    ``input_shape`` and ``num_examples`` (train + test as shipped) are None when the files are absent
    and the values cannot be known without them. ``note`` says why a dataset is unavailable.
    """

    name: str
    description: str
    source: str  # "embedded" | "disk"
    expected: str  # the files / layout looked for, relative to data_dir
    available: bool
    path: str | None = None  # where the files were found
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    num_examples: int | None = None
    note: str = ""


def channel_stats(x_NHWC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32, shape (C,), [0, 255] units) of a uint8 image array; exact.

    Chunks of 256 images are summed per pixel position in float32: a sum of 256 values <= 255**2
    stays below 2**24, so it is exact; positions and chunks are then added in float64. Summing
    whole image rows keeps numpy's inner loop long (a reduction over a (M, 3) array is 10x slower).
    """
    n, c = len(x_NHWC), x_NHWC.shape[-1]
    if n == 0:
        return np.zeros(c, np.float32), np.full(c, STD_FLOOR, np.float32)
    d = int(np.prod(x_NHWC.shape[1:]))
    total = np.zeros(d, np.float64)
    total_sq = np.zeros(d, np.float64)
    for start in range(0, n, 256):
        part = x_NHWC[start : start + 256].reshape(-1, d).astype(np.float32)
        total += part.sum(axis=0)
        part *= part
        total_sq += part.sum(axis=0)
    count = n * (d // c)
    mean = total.reshape(-1, c).sum(axis=0) / count
    var = np.maximum(total_sq.reshape(-1, c).sum(axis=0) / count - np.square(mean), 0.0)
    std = np.maximum(np.sqrt(var), STD_FLOOR)
    return mean.astype(np.float32), std.astype(np.float32)
