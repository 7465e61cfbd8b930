"""What a dataset is to the catalogue: a ``Spec`` (how its files are found, read and described), the
arrays its format ships (``Shipped``) and what a cheap look at the files tells (``Probe``).

``catalog.py`` (the names, ``load_dataset``) and ``ondisk.py`` (the on-disk formats) both build on these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Shipped:
    """The arrays as a format ships them, before the seeded split.

    ``x_test`` is None for a format that ships one pool; ``x_val`` is set only where the format
    ships its own validation split (CelebA's partition file).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"num_classes": np.asarray(self.num_classes), "class_names": np.asarray(self.class_names, dtype=str)}
        for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Shipped:
        return cls(
            x_train=a["x_train"],
            y_train=a["y_train"],
            num_classes=int(a["num_classes"]),
            x_test=a.get("x_test"),
            y_test=a.get("y_test"),
            x_val=a.get("x_val"),
            y_val=a.get("y_val"),
            class_names=tuple(str(s) for s in a.get("class_names", ())),
        )


@dataclasses.dataclass(frozen=True)
class Probe:
    """What can be learnt about present files cheaply, without decoding them."""

    num_classes: int | None
    input_shape: tuple[int, int, int] | None
    num_examples: int | None


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one dataset is found, read and described.

    ``locate(data_dir)`` returns the directory holding the files or raises ``UserError`` naming every
    place looked at; ``read(root, image_size)`` returns the shipped arrays; ``sources(root)`` lists
    the files whose sizes and mtimes key the cache (only for ``cached`` specs).
    """

    name: str
    description: str
    source: str  # "embedded" | "disk"
    expected: str
    locate: Callable[[Path | None], Path | None]
    read: Callable[[Path | None, int], Shipped]
    probe: Callable[[Path | None, int], Probe]
    cached: bool = False
    sources: Callable[[Path | None], list[Path]] | None = None
    resized: bool = False  # the arrays depend on image_size
