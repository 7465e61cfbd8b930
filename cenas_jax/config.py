"""Configuration: frozen dataclasses, one loader (YAML + ``--set a.b=value``).

Every section of a run is a frozen dataclass below. ``load_config`` reads a
YAML file, applies command-line overrides and builds the dataclasses
strictly: an unknown key, a wrong type or an impossible value is a
``ConfigError`` that names the key (``train.epochs: expected int, got 'x'``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from cenas_jax.errors import ConfigError  # defined with UserError at the bottom layer; re-exported here


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives on disk, and how it is split."""

    name: str = "digits"  # digits | mnist5k | mnist | fashion_mnist | cifar10 | cifar100 | svhn | imagenette | celeba | folder:PATH
    data_dir: str | None = None  # root holding the on-disk datasets
    seed: int = 0  # split seed
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    image_size: int = 64  # resize target for image-folder datasets (ImageNette, CelebA, user folders)
    max_train: int | None = None  # cap the training split (None: all)
    cache_dir: str | None = None  # decoded-array cache (None: ~/.cache/cenas_jax/data)

    def __post_init__(self) -> None:
        _check(0.0 <= self.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)")
        _check(0.0 <= self.test_fraction < 1.0, "data.test_fraction", "must be in [0, 1)")
        _check(self.val_fraction + self.test_fraction < 1.0, "data.val_fraction", "val + test fractions must be < 1")
        _check(self.image_size >= 4, "data.image_size", "must be >= 4")
        _check(self.max_train is None or self.max_train >= 1, "data.max_train", "must be >= 1 (or null: all)")
        _check(bool(self.name), "data.name", "must not be empty")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The proxy training recipe (DESIGN.md §8: SGD lr 0.01, momentum 0.9, batch 64, 1 epoch)."""

    epochs: float = 1.0
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    seeds: int = 1  # independent training seeds per candidate
    epoch_strategy: Literal["auto", "loop", "scan"] = "auto"  # python loop of jitted steps vs one lax.scan per epoch
    seed_strategy: Literal["auto", "sequential", "vmap"] = "auto"
    eval_batch_size: int = 512
    compile_cache: bool = True  # persistent XLA compilation cache
    compile_cache_dir: str | None = None  # None: ~/.cache/cenas_jax/xla
    fast_pooling: bool = True  # non-overlapping pooling as reshape+reduce while tracing (train/pooling.py)
    fast_depthwise: bool = True  # depthwise convs as shifted multiply-adds while tracing (train/depthwise.py)

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "train.epochs", "must be > 0")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0")
        _check(self.seeds >= 1, "train.seeds", "must be >= 1")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and pool size of the candidate sandbox (DESIGN.md §3)."""

    workers: int = 0  # 0: one per core / device
    timeout_s: float = 300.0  # wall clock per candidate, enforced by the parent
    memory_mb: int = 6144  # address-space limit per worker (CPU only)
    cpu_time_s: int = 1800  # RLIMIT_CPU per worker
    max_tasks_per_worker: int = 25  # recycle a worker after this many tasks
    isolation: Literal["auto", "full", "rlimits"] = "auto"
    max_params: int = 5_000_000  # parameter budget, checked with jax.eval_shape
    max_source_bytes: int = 64_000
    threads_per_worker: int = 1
    # CPU: bind each worker to cores of its own when the pool fits the cores (DESIGN.md §3 "Pool scaling on CPU")
    pin_cores: bool = True
    check_timeout_s: float = 60.0  # wall clock for the cheap stages (syntax..budget) of one candidate
    startup_timeout_s: float = 240.0  # a worker must be ready (jax imported, isolated) within this
    tmpfs_mb: int = 256  # size of the worker's private /tmp and /dev/shm (full isolation)
    file_size_mb: int = 64  # RLIMIT_FSIZE per worker
    workers_per_device: int = 1  # GPU: workers sharing one device (memory split evenly among them)
    # GPU: devices each worker owns; its vmapped seeds are split over them (train.seed_strategy, DESIGN.md §3)
    devices_per_worker: int = 1
    device_memory_fraction: float = 0.0  # GPU/TPU: share of a device for all its workers; 0: 0.75
    tpu_worker_per_chip: bool = True  # TPU: one single-chip worker per chip; false: one worker owns them all
    # Where the workers run (DESIGN.md §7 "Ray"): "local", this host's pool; "ray", pools hosted by Ray actors.
    backend: Literal["local", "ray"] = "local"
    ray_address: str = ""  # "": a local Ray started for the run; else the cluster to join ("auto", "ray://h:10001")
    ray_actors: int = 0  # 0: one per group of ray_gpus_per_actor GPUs; with CPU actors, one per node
    # GPUs each actor holds (a worker per GPU there): -1, as many as the GPU node with the fewest has (one actor
    # per GPU node; CPU actors on a cluster without GPUs); 0: CPU actors; N: N GPUs.
    ray_gpus_per_actor: int = -1

    def __post_init__(self) -> None:
        _check(self.workers >= 0, "sandbox.workers", "must be >= 0")
        _check(self.check_timeout_s > 0, "sandbox.check_timeout_s", "must be > 0")
        _check(self.startup_timeout_s > 0, "sandbox.startup_timeout_s", "must be > 0")
        _check(self.tmpfs_mb >= 16, "sandbox.tmpfs_mb", "must be >= 16")
        _check(self.file_size_mb >= 1, "sandbox.file_size_mb", "must be >= 1")
        _check(self.cpu_time_s >= 1, "sandbox.cpu_time_s", "must be >= 1")
        _check(self.threads_per_worker >= 1, "sandbox.threads_per_worker", "must be >= 1")
        _check(self.timeout_s > 0, "sandbox.timeout_s", "must be > 0")
        _check(self.memory_mb >= 256, "sandbox.memory_mb", "must be >= 256")
        _check(self.max_params >= 1, "sandbox.max_params", "must be >= 1")
        _check(self.max_tasks_per_worker >= 1, "sandbox.max_tasks_per_worker", "must be >= 1")
        _check(self.workers_per_device >= 1, "sandbox.workers_per_device", "must be >= 1")
        _check(self.devices_per_worker >= 1, "sandbox.devices_per_worker", "must be >= 1")
        _check(self.devices_per_worker == 1 or self.workers_per_device == 1, "sandbox.devices_per_worker",
               "cannot be combined with workers_per_device > 1 (a worker owning several GPUs shares none)")
        _check(0.0 <= self.device_memory_fraction <= 1.0, "sandbox.device_memory_fraction",
               "must be in [0, 1] (0: the default, 0.75)")
        _check(self.ray_actors >= 0, "sandbox.ray_actors", "must be >= 0 (0: one per node or GPU group)")
        _check(self.ray_gpus_per_actor >= -1, "sandbox.ray_gpus_per_actor",
               "must be -1 (the GPUs of the smallest GPU node), 0 (CPU actors) or a number of GPUs")
        _check(self.ray_address == self.ray_address.strip(), "sandbox.ray_address",
               f"has leading or trailing spaces: {self.ray_address!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which LLM: the embedded ``smollm2-135m``, a HF directory, or a .gguf file."""

    name: str = "smollm2-135m"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: fp32 on CPU, bf16 on accelerators
    chat_template: bool = True


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings (DESIGN.md §8: T 0.35, top-k 50, top-p 0.9, 1,024 new tokens)."""

    temperature: float = 0.35
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 1024
    temperature_delta: float | None = None  # delta answers' temperature (None: temperature)
    max_new_tokens_delta: int | None = 384  # delta answers are one short edit block; None: max_new_tokens
    max_repeat_lines: int | None = 8  # end a generation stuck repeating one line this many times; None: off
    batch_size: int = 16
    # Speculative decoding by prompt lookup (llm/speculative.py): draft up to this many tokens per row and
    # forward from the row's own prompt and output; 0: off. Greedy output is unchanged, sampled output keeps
    # its distribution (other draws, so other programs for the same seed). auto: 2 for batches of at most 2
    # rows (a resample after a near-duplicate: one row's forward is bound by reading the weights, and drafts
    # gave 1.4-1.7x at T 0.8), off for larger ones (on a 2-core CPU at batch 16 a forward over k+1 positions
    # is compute-bound and costs about what it gains at T 0.7). DESIGN.md §4 "Generation speed" has the
    # measurements; an integer applies to every batch (greedy or cold sampling, accelerators).
    speculative_k: int | Literal["auto"] = "auto"
    lookup_ngram: int = 3  # drafts continue the most recent match of the row's last n <= lookup_ngram tokens
    # The dtype of the sampler's copy of the model's matrices (projections, embedding, head); products take
    # their input in it and sum in float32, all else stays in the model's dtype. auto: bfloat16 for a float32
    # model where the device multiplies bfloat16 natively (an accelerator; a CPU with avx512_bf16 or amx_bf16),
    # else the model's own. Logits move by bfloat16's rounding (DESIGN.md §4 "Generation speed"); fine-tuning
    # is unaffected.
    weights_dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, "sampling.temperature", "must be >= 0")
        _check(self.speculative_k == "auto" or (not isinstance(self.speculative_k, str) and 0 <= self.speculative_k <= 16),
               "sampling.speculative_k", "must be auto or in 0..16 (0: off)")
        _check(self.lookup_ngram >= 1, "sampling.lookup_ngram", "must be >= 1")
        _check(self.weights_dtype in ("auto", "float32", "bfloat16"), "sampling.weights_dtype",
               "must be auto, float32 or bfloat16")
        _check(self.temperature_delta is None or self.temperature_delta >= 0, "sampling.temperature_delta",
               "must be >= 0 or null")
        _check(0 < self.top_p <= 1, "sampling.top_p", "must be in (0, 1]")
        _check(self.top_k >= 0, "sampling.top_k", "must be >= 0 (0: off)")
        _check(self.max_new_tokens >= 1, "sampling.max_new_tokens", "must be >= 1")
        _check(self.max_new_tokens_delta is None or self.max_new_tokens_delta >= 1, "sampling.max_new_tokens_delta",
               "must be >= 1 or null")
        _check(self.max_repeat_lines is None or self.max_repeat_lines >= 2, "sampling.max_repeat_lines",
               "must be >= 2 or null")
        _check(self.batch_size >= 1, "sampling.batch_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (DESIGN.md §8: r=32, alpha=32 on q/k/v/o/gate/up/down)."""

    rank: int = 32
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    layers: tuple[int, ...] | None = None  # None: every layer; negative indices count from the end

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "lora.rank", "must be >= 1")
        _check(self.alpha > 0, "lora.alpha", "must be > 0 (the adapter is scaled by alpha / rank)")
        _check(len(self.targets) > 0, "lora.targets", "must name at least one projection")
        _check(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")
        allowed = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        bad = [t for t in self.targets if t not in allowed]
        _check(not bad, "lora.targets", f"unknown projection(s) {bad}; choose from {sorted(allowed)}")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """The CE update: sequence-level NLL of completions, AdamW, warm-up + cosine."""

    learning_rate: float = 1e-4
    epochs: float = 3.0
    max_steps: int | None = None  # cap on optimiser steps (None: from epochs)
    batch_size: int = 4  # sequences per optimiser step (after accumulation)
    grad_accum: int = 1  # micro-batches per step; on CPU use batch_size (micro-batches of 1): a 135M model's 1.5k-token backward takes ~8 GB per sequence
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    normalization: Literal["sequence", "token_mean"] = "sequence"
    max_seq_len: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "finetune.learning_rate", "must be > 0")
        _check(self.epochs > 0, "finetune.epochs", "must be > 0")
        _check(self.batch_size >= 1, "finetune.batch_size", "must be >= 1")
        _check(self.grad_accum >= 1, "finetune.grad_accum", "must be >= 1")
        _check(self.batch_size % self.grad_accum == 0, "finetune.grad_accum", "must divide finetune.batch_size")
        _check(self.max_steps is None or self.max_steps >= 1, "finetune.max_steps", "must be >= 1 or null")
        _check(self.warmup_steps >= 0, "finetune.warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, "finetune.weight_decay", "must be >= 0")
        _check(self.max_grad_norm >= 0, "finetune.max_grad_norm", "must be >= 0 (0: no clipping)")
        _check(self.max_seq_len >= 2, "finetune.max_seq_len", "must be >= 2 (a prompt token and a completion token)")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Everything about the generator p_theta."""

    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    lora: LoRAConfig = LoRAConfig()
    finetune: FinetuneConfig = FinetuneConfig()


@dataclasses.dataclass(frozen=True)
class NoveltyConfig:
    """MinHash novelty filter (DESIGN.md §1 step 4)."""

    enabled: bool = True
    num_perm: int = 128
    shingle: int = 7
    threshold: float = 0.85
    threshold_delta: float | None = 1.0  # delta candidates: copies only (measured: DESIGN.md §1 "The novelty filter"); None: threshold
    delta_parent_counts: bool = True  # a delta candidate is compared with its own parent too
    seed: int = 1  # MinHash permutation seed
    max_resamples: int = 2
    temperature_bump: float = 0.1

    def __post_init__(self) -> None:
        _check(0 < self.threshold <= 1, "novelty.threshold", "must be in (0, 1]")
        _check(
            self.threshold_delta is None or 0 < self.threshold_delta <= 1, "novelty.threshold_delta", "must be in (0, 1]"
        )
        _check(self.num_perm >= 16, "novelty.num_perm", "must be >= 16")
        _check(self.shingle >= 1, "novelty.shingle", "must be >= 1")
        _check(self.max_resamples >= 0, "novelty.max_resamples", "must be >= 0")
        _check(self.temperature_bump >= 0, "novelty.temperature_bump", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The cross-entropy loop."""

    cycles: int = 3
    candidates_per_cycle: int = 12
    mode: Literal["full", "delta", "mixed"] = "mixed"
    delta_share: float = 0.5  # share of delta candidates in mixed mode
    edit_format: Literal["search_replace", "unified_diff"] = "search_replace"
    delta_fuzzy: float = 0.75  # least match ratio of a misremembered SEARCH block / hunk (search/delta.py); 0: exact only
    complete_imports: bool = True  # add the standard imports a program forgot (candidates/repair.py)
    elite_rho: float = 0.25  # elite fraction: gamma_t is the (1 - rho) quantile
    elite_floor: float | None = None  # absolute quality floor for elites
    elite_memory: bool = False  # previous elites stay while they still reach this cycle's threshold
    max_elites: int | None = None  # cap on |S_t| after ordering (None: no cap)
    replay_weight: float = 1.0  # weight of the corpus L in the CE update
    update_token_budget: int = 40_000  # tokens per CE update
    datasets: tuple[str, ...] = ()  # extra datasets for a multi-dataset pool (empty: data.name only)
    max_wall_s: float | None = None  # stop (at a phase boundary, checkpointed) after this much wall time
    max_tokens: int | None = None  # stop after this many generated tokens
    preempt_grace_s: float = 20.0  # after SIGTERM: finish the work in flight for at most this long, then abandon it
    corpus: tuple[str, ...] = ()  # names of the seed-corpus programs L to use (empty: all)
    corpus_dir: str | None = None  # a folder of .py programs replacing the packaged corpus
    warm_start: bool = True  # the CE update on L alone before cycle 0 (cached across runs)
    ce_update: bool = True  # false: the LLM stays frozen after the warm start (a control)
    generator: Literal["llm", "mutation"] = "llm"  # "mutation": random edits of the parent (a control, no LLM)
    warm_start_epochs: int = 1  # passes over L in the warm start, each with fresh pairs (new mutations, references)
    warm_start_learning_rate: float | None = None  # the warm start's peak rate (None: finetune.learning_rate)
    warm_start_passes: int | None = None  # times each warm-start pair is trained on (None: finetune.epochs); repeats reuse the frozen layers' activations
    novelty: NoveltyConfig = NoveltyConfig()

    def __post_init__(self) -> None:
        _check(self.cycles >= 1, "search.cycles", "must be >= 1")
        _check(self.candidates_per_cycle >= 1, "search.candidates_per_cycle", "must be >= 1")
        _check(0 <= self.delta_share <= 1, "search.delta_share", "must be in [0, 1]")
        _check(0 < self.elite_rho <= 1, "search.elite_rho", "must be in (0, 1]")
        _check(self.max_elites is None or self.max_elites >= 1, "search.max_elites", "must be >= 1")
        _check(self.replay_weight >= 0, "search.replay_weight", "must be >= 0")
        _check(self.preempt_grace_s >= 0, "search.preempt_grace_s", "must be >= 0")
        _check(self.warm_start_epochs >= 1, "search.warm_start_epochs", "must be >= 1")
        _check(self.warm_start_learning_rate is None or self.warm_start_learning_rate > 0,
               "search.warm_start_learning_rate", "must be > 0 or null")
        _check(self.warm_start_passes is None or self.warm_start_passes >= 1, "search.warm_start_passes",
               "must be >= 1 or null")
        _check(self.update_token_budget >= 1, "search.update_token_budget", "must be >= 1")
        _check(0 <= self.delta_fuzzy <= 1, "search.delta_fuzzy", "must be in [0, 1] (0: exact matching only)")


@dataclasses.dataclass(frozen=True)
class ProxySNRConfig:
    """`cenas proxy-snr`: K architectures x S seeds at a proxy and a long budget (DESIGN.md §6, result 6)."""

    architectures: tuple[str, ...] = ()  # corpus names, or candidate ids with from_run (empty: all)
    max_architectures: int = 0  # cap on K, a seeded random subset (0: no cap)
    seeds: int = 3  # proxy seeds S per architecture (>= 2: ANOVA and the retest need two)
    proxy_epochs: float = 1.0
    truth_epochs: float = 10.0  # the long budget taken as ground truth
    truth_seeds: int = 1  # ground truth = mean over these seeds
    n_boot: int = 1000  # bootstrap resamples for every CI
    ci: float = 0.95
    from_run: str | None = None  # a run directory: use its trained candidates instead of the corpus
    # Seeds per task: an architecture's S seeds are trained as tasks of this many seeds each, spread over the
    # workers (0: all S in one task, trained one after the other on CPU, vmapped on accelerators).
    seeds_per_task: int = 0

    def __post_init__(self) -> None:
        _check(self.max_architectures >= 0, "proxy_snr.max_architectures", "must be >= 0 (0: no cap)")
        _check(self.seeds >= 2, "proxy_snr.seeds", "must be >= 2 (seed noise and the retest need two seeds)")
        _check(self.proxy_epochs > 0, "proxy_snr.proxy_epochs", "must be > 0")
        _check(self.truth_epochs > 0, "proxy_snr.truth_epochs", "must be > 0")
        _check(self.truth_seeds >= 1, "proxy_snr.truth_seeds", "must be >= 1")
        _check(self.n_boot >= 0, "proxy_snr.n_boot", "must be >= 0")
        _check(0 < self.ci < 1, "proxy_snr.ci", "must be in (0, 1)")
        _check(self.seeds_per_task >= 0, "proxy_snr.seeds_per_task", "must be >= 0 (0: all seeds in one task)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: the root of every YAML under experiments/."""

    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sandbox: SandboxConfig = SandboxConfig()
    llm: LLMConfig = LLMConfig()
    search: SearchConfig = SearchConfig()
    proxy_snr: ProxySNRConfig = ProxySNRConfig()


# ---------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested mapping, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known keys{' in ' + prefix if prefix else ''}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or '<root>'}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML scalars/lists) to a nested mapping."""
    out = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from e
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {p} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type[T] = RunConfig) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus ``--set`` overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "ConfigError",
    "DataConfig",
    "TrainConfig",
    "SandboxConfig",
    "ModelConfig",
    "SamplingConfig",
    "LoRAConfig",
    "FinetuneConfig",
    "LLMConfig",
    "NoveltyConfig",
    "SearchConfig",
    "ProxySNRConfig",
    "RunConfig",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "load_config",
    "read_yaml",
    "replace",
]

_ = typing  # keep the import for forward references in get_type_hints
