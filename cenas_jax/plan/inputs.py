"""What ``cenas plan`` reads of a config's world without running anything: the LLM's parameter count (from the
weights' headers, never the weights), a dataset's training-split size and image shape, the seed corpus's size,
and whether the warm start will be trained or restored.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import struct
from pathlib import Path

from cenas_jax.candidates.placement import Inventory, pool_size
from cenas_jax.config import DataConfig, RunConfig
from cenas_jax.data.catalog import resolve
from cenas_jax.data.splits import _count
from cenas_jax.errors import UserError
from cenas_jax.paths import cache_root, shipped_warm_starts
from cenas_jax.search import update as update_mod
from cenas_jax.search.ce_update import warm_start_plan
from cenas_jax.search.evaluate import dataset_pool
from cenas_jax.search.loop import select_corpus

# ------------------------------------------------------------------------------------------ the LLM's size


def model_params(name: str) -> int:
    """Parameters of the model ``llm.model.name`` names, counted from its files' headers: the tensor table of a
    GGUF file, or the JSON headers of a Hugging Face directory's ``*.safetensors``. ``UserError`` when the model
    cannot be found or counted (``cenas plan --model-params`` then gives the count)."""
    # Resolving the embedded name goes through llm/weights.py, which imports JAX: only when an LLM is named.
    from cenas_jax.llm.weights import resolve_model_path

    path = resolve_model_path(name)
    if path.is_file():
        return gguf_params(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"model directory {path} has no *.safetensors files to count its parameters in; "
                        "give the count with --model-params (e.g. 7B)")
    return sum(safetensors_params(f) for f in files)


def safetensors_params(path: Path) -> int:
    """Elements of every tensor of a safetensors file, from its JSON header (8-byte length, then the header)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 << 20:
                raise ValueError(f"a header of {n} bytes")
            header = json.loads(f.read(n))
        return sum(_product(v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e}); give the count with --model-params") from None


# GGUF metadata value types (the format's numbering) and the bytes of the fixed-size ones.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_params(path: Path) -> int:
    """Elements of every tensor of a GGUF file (version 2 or 3), from its tensor table: the metadata is skipped
    over, nothing is dequantised."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m[:4] != b"GGUF":
                raise ValueError("no GGUF magic")
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
            if version < 2:
                raise ValueError(f"GGUF version {version} (2 or 3 are read)")
            pos = 24
            for _ in range(n_kv):
                pos = _skip_string(m, pos)
                (vtype,) = struct.unpack_from("<I", m, pos)
                pos = _skip_value(m, pos + 4, vtype)
            total = 0
            for _ in range(n_tensors):
                pos = _skip_string(m, pos)
                (n_dims,) = struct.unpack_from("<I", m, pos)
                dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
                pos += 4 + 8 * n_dims + 4 + 8  # dims, then the tensor type and its offset
                total += _product(dims)
            return total
    except (OSError, ValueError, struct.error) as e:
        raise UserError(f"{path}: cannot read its GGUF tensor table ({e}); give the count with --model-params") from None


def _skip_string(m: mmap.mmap, pos: int) -> int:
    (n,) = struct.unpack_from("<Q", m, pos)
    return pos + 8 + n


def _skip_value(m: mmap.mmap, pos: int, vtype: int) -> int:
    if vtype in _GGUF_SIZES:
        return pos + _GGUF_SIZES[vtype]
    if vtype == _GGUF_STRING:
        return _skip_string(m, pos)
    if vtype == _GGUF_ARRAY:
        itype, n = struct.unpack_from("<IQ", m, pos)
        pos += 12
        if itype in _GGUF_SIZES:
            return pos + n * _GGUF_SIZES[itype]
        for _ in range(n):
            pos = _skip_value(m, pos, itype)
        return pos
    raise ValueError(f"unknown metadata value type {vtype}")


def _product(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


# ------------------------------------------------------------------------------------------ the datasets

# Nominal sizes of the named datasets: (examples the format ships for training, image shape or None where it
# follows data.image_size, how they are split). "pool": one pool split three ways; "test": an official test
# split, validation carved out of the training examples; "val": official validation and test splits too.
NOMINAL = {
    "digits": (1_797, (8, 8, 1), "pool"),
    "mnist5k": (5_000, (28, 28, 1), "pool"),
    "mnist": (60_000, (28, 28, 1), "test"),
    "fashion_mnist": (60_000, (28, 28, 1), "test"),
    "cifar10": (50_000, (32, 32, 3), "test"),
    "cifar100": (50_000, (32, 32, 3), "test"),
    "svhn": (73_257, (32, 32, 3), "test"),
    "imagenette": (9_469, None, "test"),  # imagenette2's train/ folder; its val/ is the test split
    "celeba": (162_770, None, "val"),  # the official partition's training images
}


@dataclasses.dataclass(frozen=True)
class DatasetShape:
    """What a proxy training's length depends on: training examples after the split, and the image."""

    name: str
    train_examples: int
    height: int
    width: int
    channels: int

    def steps_per_epoch(self, batch: int) -> int:
        return max(1, self.train_examples // batch)


def dataset_shape(name: str, data: DataConfig) -> DatasetShape:
    """The training split and image shape of dataset ``name`` under ``data``'s split settings: nominal sizes for
    the named datasets (their files need not be here), a look at the files for ``folder:PATH``."""
    resolve(name)  # an unknown name is a UserError listing the known ones
    if name in NOMINAL:
        n, image, kind = NOMINAL[name]
        h, w, c = image if image is not None else (data.image_size, data.image_size, 3)
    else:
        spec = resolve(name)
        probe = spec.probe(spec.locate(Path(data.data_dir).expanduser() if data.data_dir else None), data.image_size)
        if probe.num_examples is None or probe.input_shape is None:
            raise UserError(f"dataset {name}: its size cannot be read without loading it")
        n, (h, w, c), kind = probe.num_examples, probe.input_shape, "pool"
    if kind == "pool":
        train = n - _count(data.test_fraction, n) - _count(data.val_fraction, n)
    elif kind == "test":
        train = n - _count(data.val_fraction, n)
    else:
        train = n
    if data.max_train is not None:
        train = min(train, data.max_train)
    return DatasetShape(name, max(1, train), h, w, c)


def pool_shapes(cfg: RunConfig) -> list[DatasetShape]:
    """The shapes of every dataset of the run's pool (``data.name`` first, then ``search.datasets``)."""
    return [dataset_shape(d, cfg.data) for d in dataset_pool(cfg)]


# ------------------------------------------------------------------------------------------ workers


def workers_per_host(cfg: RunConfig, device: str, devices_per_host: int) -> int:
    """Sandbox workers one host starts (``candidates/placement.pool_size`` on a host of ``devices_per_host``
    GPUs or TPU chips, or cores for ``cpu``)."""
    if device == "cpu":
        inv = Inventory("cpu", (), devices_per_host)
    else:
        inv = Inventory(device, tuple(str(i) for i in range(devices_per_host)), 1)
    return pool_size(inv, cfg.sandbox)


# ------------------------------------------------------------------------------------------ corpus, warm start


def corpus_size(cfg: RunConfig) -> int:
    """Programs in the run's seed corpus L (``search.corpus`` of the packaged corpus or ``search.corpus_dir``)."""
    return len(select_corpus(cfg.search))


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What the reference phase's warm start will cost: ``status`` is "off" (no LLM, or ``search.warm_start``
    false), "shipped" or "cached" (an adapter for its key is there: restored, nearly free) or "trained";
    ``pairs`` x ``passes`` pairs of ``tokens`` tokens per pass in all (estimated from characters); ``key`` the
    cache key (of the pairs and settings, and of the model when ``model_found``)."""

    status: str
    pairs: int = 0
    passes: int = 0
    tokens: float = 0.0
    key: str | None = None
    model_found: bool = True


def warm_start(cfg: RunConfig) -> WarmStart:
    """Whether the run's warm start will be trained, and its pairs: the key is computed as the loop computes it
    (``search/ce_update.warm_start_plan``) and looked up in the cache and among the shipped adapters."""
    if cfg.search.generator == "mutation" or not cfg.search.warm_start:
        return WarmStart("off")
    corpus = select_corpus(cfg.search)
    passes = cfg.search.warm_start_passes or 1  # as UpdatePhase.warm_start trains it
    try:
        from cenas_jax.search.llm_generator import model_fingerprint

        fingerprint = model_fingerprint(cfg.llm.model.name)
    except (UserError, OSError):
        fingerprint = None
    examples, key = warm_start_plan(cfg, corpus, fingerprint or "")
    tokens = float(sum(update_mod.chars_estimate(p, c) for p, c in examples))
    status = "trained"
    if fingerprint is not None:
        shipped = shipped_warm_starts()
        if (cache_root() / "warmstart" / key / "COMPLETE").exists():
            status = "cached"
        elif shipped is not None and (shipped / key / "COMPLETE").exists():
            status = "shipped"
    return WarmStart(status, len(examples), passes, tokens, key, fingerprint is not None)
