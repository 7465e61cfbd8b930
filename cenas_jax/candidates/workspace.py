"""The Evaluator's files on the host: its temp root, the datasets it exports there for workers, stale roots.

Each Evaluator owns one directory ``$TMPDIR/cenas-sandbox-<pid>-<random>`` (mode 0700) holding ``data/``
(the datasets, readable by the sandbox uid), ``logs/`` (one log per worker) and ``work/`` (one work
directory per worker). The parent loads each dataset once and writes its train and validation arrays as
``.npy`` files into ``data/``, which appears read-only at ``/tmp/.cenas-data`` inside the sandbox; the
test split is written only for an Evaluator built with ``eval_split="test"`` (final retraining, never the
search), and a worker never opens a user path after dropping privileges (DESIGN.md §3). A root whose
process died without ``close()`` is deleted by the next Evaluator (``remove_stale_roots``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from typing import Any

from cenas_jax.config import DataConfig

ROOT_PREFIX = "cenas-sandbox-"


def remove_stale_roots() -> None:
    """Delete the temp dirs (dataset copies, logs) of evaluators whose process died without ``close()``."""
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        return
    for name in entries:
        m = re.fullmatch(rf"{ROOT_PREFIX}(\d+)-\w+", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:
            pass  # alive (another user's): leave it


class Workspace:
    """A fresh temp root with ``data_dir``, ``log_dir`` and ``work_root``; ``dataset_info`` exports datasets.

    ``eval_split`` ("val" or "test") is the split trained candidates are scored
    on: the test arrays are written only for "test". The root is removed by
    whoever owns it (the Evaluator's finalizer), not here.
    """

    def __init__(self, data_cfg: DataConfig, eval_split: str) -> None:
        self.data_cfg = data_cfg
        self.eval_split = eval_split
        self.root = tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-")
        os.chmod(self.root, 0o700)
        self.data_dir = os.path.join(self.root, "data")
        self.log_dir = os.path.join(self.root, "logs")
        self.work_root = os.path.join(self.root, "work")
        os.mkdir(self.data_dir, 0o755)
        os.chmod(self.data_dir, 0o755)  # the sandbox uid reads it (bind-mounted read-only)
        os.mkdir(self.log_dir, 0o700)
        os.mkdir(self.work_root, 0o755)
        os.chmod(self.work_root, 0o755 if os.geteuid() != 0 else 0o711)
        self._datasets: dict[str, Any] = {}  # name -> Dataset (parent copy, for metadata)
        self._written: dict[str, str] = {}  # name -> key of its directory under data/

    def _dataset(self, name: str) -> Any:
        if name not in self._datasets:
            from cenas_jax.data import load_dataset

            self._datasets[name] = load_dataset(dataclasses.replace(self.data_cfg, name=name))
        return self._datasets[name]

    def dataset_info(self, name: str, write: bool) -> dict:
        """Metadata for the worker; with ``write`` also the arrays as .npy files it reads (the test split only
        when this Evaluator scores on it, ``eval_split="test"``)."""
        import numpy as np

        ds = self._dataset(name)
        info = {"name": ds.name, "num_classes": int(ds.num_classes), "input_shape": list(ds.input_shape)}
        if write and name not in self._written:
            key = f"d{len(self._written)}"
            path = os.path.join(self.data_dir, key)
            tmp = path + ".partial"
            os.mkdir(tmp, 0o755)
            fields = ("x_train", "y_train", "x_val", "y_val", "mean", "std")
            if self.eval_split == "test":
                fields += ("x_test", "y_test")
            for field in fields:
                target = os.path.join(tmp, f"{field}.npy")
                np.save(target, np.ascontiguousarray(getattr(ds, field)))
                os.chmod(target, 0o644)
            os.chmod(tmp, 0o755)
            os.rename(tmp, path)
            self._written[name] = key
        info["key"] = self._written.get(name)
        return info
