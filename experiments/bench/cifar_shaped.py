"""The paper's proxy regime without CIFAR-10 on disk: a 50,000-image 32x32x3 training set made from mnist5k.

Each training image is an mnist5k training digit, zero-padded from 28x28 to 36x36, cut back to 32x32 at a
random offset (a shift of up to 2 pixels each way) and tiled over three channels; the 50,000 are drawn
with replacement. Validation keeps mnist5k's own validation digits, centred. The shapes, the step count
(781 steps of 64 per epoch) and so the cost of a proxy epoch are CIFAR-10's; the task is easier.
With a real CIFAR-10 directory (``cifar-10-batches-py`` under ``data_dir``) that is used instead.
"""

from __future__ import annotations

import numpy as np

from cenas_jax.config import DataConfig
from cenas_jax.data import load_dataset
from cenas_jax.data.dataset import Dataset, channel_stats

CIFAR_TRAIN = 50_000


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
