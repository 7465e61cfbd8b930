"""Per-device costs of a run's work: the figures ``cenas plan`` multiplies the work of a config by.

A ``CostModel`` holds, for one device kind (``cpu``, ``gpu``, ``tpu``), what a token of sampling or fine-tuning,
a proxy training step, a compilation and a cheap check cost, each with where the figure comes from. The CPU
figures were measured on the 2-core machine this package is developed on; no accelerator figure was measured
for the LLM at the size a real search uses, so the GPU and TPU defaults are assumptions, labelled as such, and
``--costs FILE`` replaces any of them (``load_costs``). ``--from-run`` recalibrates them from a finished run's
store (``plan/calibrate.py``).

The LLM figures are for a model of ``ref_params`` parameters; ``plan/predict.py`` scales them linearly with the
parameter count of the configured model (a token costs about two FLOPs and two bytes of weights per parameter).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cenas_jax.errors import UserError

DEVICES = ("cpu", "gpu", "tpu")

# What each figure means (the YAML keys of a costs file are these names); printed by `cenas plan --help`.
FIELDS: dict[str, str] = {
    "prefill_tok_s": "prompt tokens per second of sampling (the prefill), at `batch` rows",
    "decode_tok_s": "new tokens per second of sampling at `batch` rows (tokens kept; rows that end early wait "
                    "for their batch's longest, which the figure includes)",
    "batch": "rows per sampling batch the two sampling rates were measured at",
    "decode_batch_exponent": "new tokens/s at b rows = decode_tok_s x (b / batch) ** exponent",
    "finetune_tok_s": "LoRA fine-tuning tokens per second (every pass's tokens count)",
    "update_overhead_s": "fixed seconds per CE update (compiling the update step, a fresh optimiser, the adapter "
                         "checkpoint)",
    "ref_params": "parameters of the LLM the four LLM figures above and llm_load_s are for",
    "llm_load_s": "seconds to load the LLM, once per run",
    "step_s": "proxy training seconds per step of one seed, for a typical small CNN, in one worker",
    "step_pixels": "image height x width the step figure is for (a step scales with the pixels)",
    "step_batch": "batch size the step figure is for (a step scales with the batch)",
    "compile_s": "seconds to compile one architecture and set up its training (all its seeds)",
    "check_s": "worker-seconds of the cheap checks (syntax, policy, build, shape, budget) per generation",
    "pool_efficiency": "throughput of each worker while two or more of a host's workers run at once, "
                       "relative to a worker alone (1: workers share nothing)",
}
_INTEGER_FIELDS = ("batch", "step_pixels", "step_batch")


@dataclasses.dataclass(frozen=True)
class CostModel:
    """What work costs on one kind of device. ``sources`` says, per field, where its figure comes from: it starts
    with "measured", "assumption", "from FILE" or "calibrated from RUN"."""

    device: str
    prefill_tok_s: float
    decode_tok_s: float
    batch: int
    decode_batch_exponent: float
    finetune_tok_s: float
    update_overhead_s: float
    ref_params: float
    llm_load_s: float
    step_s: float
    step_pixels: int
    step_batch: int
    compile_s: float
    check_s: float
    pool_efficiency: float
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        for name in FIELDS:
            _check_value(f"{self.device}.{name}", getattr(self, name), name)

    # -- the rates as the prediction uses them

    def decode_rate(self, rows: float, params: float) -> float:
        """New tokens per second at ``rows`` rows for a model of ``params`` parameters."""
        return self.decode_tok_s * (max(rows, 1.0) / self.batch) ** self.decode_batch_exponent / self.scale(params)

    def prefill_rate(self, params: float) -> float:
        return self.prefill_tok_s / self.scale(params)

    def finetune_rate(self, params: float) -> float:
        return self.finetune_tok_s / self.scale(params)

    def load_seconds(self, params: float) -> float:
        return self.llm_load_s * self.scale(params)

    def scale(self, params: float) -> float:
        """How many times the reference model's per-token cost a model of ``params`` parameters has (linear)."""
        return params / self.ref_params

    def step_seconds(self, height: int, width: int, batch: int) -> float:
        """Seconds per proxy step of one seed at an image size and batch (linear in pixels and batch)."""
        return self.step_s * (height * width / self.step_pixels) * (batch / self.step_batch)

    def efficiency(self, concurrent: float) -> float:
        """Per-worker throughput with ``concurrent`` workers of one host busy at once."""
        return 1.0 if concurrent < 2 else self.pool_efficiency

    def is_assumed(self, name: str) -> bool:
        return self.sources.get(name, "").startswith("assumption")

    def replaced(self, values: Mapping[str, Any], source: str) -> CostModel:
        """A copy with ``values`` (field -> number) set, each with the same ``source``."""
        srcs = dict(self.sources)
        srcs.update({k: source for k in values})
        return dataclasses.replace(self, **values, sources=srcs)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"value": getattr(self, name), "source": self.sources.get(name, "")} for name in FIELDS}


def _check_value(key: str, value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{key}: expected a finite number, got {value!r}")
    if name in _INTEGER_FIELDS and (value != int(value) or value < 1):
        raise UserError(f"{key}: expected a whole number >= 1, got {value!r}")
    if name in ("update_overhead_s", "llm_load_s", "check_s", "decode_batch_exponent"):
        if value < 0:
            raise UserError(f"{key}: must be >= 0, got {value!r}")
    elif name == "pool_efficiency":
        if not 0 < value <= 1:
            raise UserError(f"{key}: must be in (0, 1], got {value!r}")
    elif value <= 0:
        raise UserError(f"{key}: must be > 0, got {value!r}")


# ---------------------------------------------------------------------------------------------- the defaults

SMOLLM2_135M_PARAMS = 134_515_008  # counted from the tensors of the embedded SmolLM2-135M-Instruct GGUF file
_H = "the quickstart run of 2026-12-04 on this 2-core CPU (README, Status)"

# The CPU: this 2-core x86 VM, SmolLM2-135M in fp32, one thread per sandbox worker.
_CPU: dict[str, tuple[float, str]] = {
    # make bench-llm, idle (load average 0.47), shared prefix on: a batch of 16 of the quickstart's delta
    # prompts gave 1,938 new tokens in 50.4 s, of its full prompts 5,939 in 119.0 s, each batch about 8,800
    # prompt tokens. Solving 8,800/p + 1,938/d = 50.4 and 8,800/p + 5,939/d = 119.0 gives d = 58 and p = 512
    # (both together: 38-50 tok/s in that run, 45-74 tok/s in DESIGN.md §4's table).
    "prefill_tok_s": (512.0, "measured: make bench-llm, 16 quickstart prompts (~8,800 prompt tokens per batch), "
                             "solved with decode_tok_s from a delta and a full batch"),
    "decode_tok_s": (58.0, "measured: make bench-llm, 1,938 and 5,939 new tokens from 16 delta and 16 full "
                           "quickstart prompts in 50.4 s and 119.0 s"),
    "batch": (16, "measured: make bench-llm's batch"),
    # issue 15: 177 tok/s at batch 16 and 32.4 tok/s at batch 1 on short prompts: 16 ** 0.61 = 5.46 = 177 / 32.4.
    "decode_batch_exponent": (0.61, "measured: 177 tok/s at batch 16 vs 32.4 tok/s at batch 1 on short prompts"),
    # issue 15: LoRA fine-tuning of SmolLM2-135M, 4 pairs x 256 tokens, 163 tok/s (transformers + LoRA: 221).
    "finetune_tok_s": (163.0, "measured: LoRA fine-tuning, 4 x 256 tokens, make bench-llm"),
    # The quickstart run's update phases took 32.1, 27.9 and 29.0 s for 730, 1,248 and 1,321 tokens: beyond the
    # tokens at 163 tok/s, 27.6, 20.2 and 20.9 s.
    "update_overhead_s": (23.0, f"measured: {_H}, update phases of 28-32 s for 730-1,321 tokens"),
    "ref_params": (float(SMOLLM2_135M_PARAMS), "measured: SmolLM2-135M-Instruct, the model of every CPU figure"),
    "llm_load_s": (45.0, "estimate: loading SmolLM2-135M on this CPU (reproduce/plan.py SMALL_S_LLM_LOAD)"),
    # issue 15 / DESIGN.md §3: a ResNet-like step in a sandbox worker on mnist5k (28x28x1, batch 64) takes about
    # 63 ms (57-60 ms in-process; LeNet 7.4 ms, VGG+BN 32 ms): the ResNet is taken as the typical candidate.
    "step_s": (0.063, "measured: a ResNet-like step in a worker, mnist5k 28x28x1, batch 64 (LeNet 7.4 ms)"),
    "step_pixels": (28 * 28, "measured: mnist5k's 28x28 images"),
    "step_batch": (64, "measured: batch 64"),
    # issue 15 / DESIGN.md §3: compiling costs 1.0-3.7 s per architecture; the middle of the range.
    "compile_s": (2.35, "measured: 1.0-3.7 s per architecture on this CPU, the middle of the range"),
    # The quickstart run's check evaluations took 0.14 s each in a worker; its generate phases spent about 1 s
    # beyond sampling on 13 generations with 2 workers.
    "check_s": (0.15, f"measured: {_H}, 0.14 s per check evaluation in a worker"),
    # issue 15: with two workers training at once a ResNet step takes about 93 ms instead of 63 ms.
    "pool_efficiency": (0.68, "measured: a ResNet step takes ~93 ms with two workers training at once, 63 ms alone"),
}

# GPUs: nothing was measured at a real search's model size. What was measured, once, on an H200 with
# SmolLM2-135M (docs/ACCELERATOR.md): 8,960 new tok/s at batch 16 in bf16 (so ~1.8 ms per forward of overhead),
# LoRA fine-tuning at 254 tok/s bound by per-step host work, proxy steps and compile times below. The LLM figures
# are for a 7B model (the paper's, DESIGN.md §8: NNGPT takes 30-60 s per generate-and-train step on an RTX 4090
# with a 4-bit 7B model).
_GPU: dict[str, tuple[float, str]] = {
    # 2 FLOP per parameter and token; ~30% of an H100-class GPU's ~990 TFLOP/s in bf16.
    "prefill_tok_s": (20_000.0, "assumption: compute-bound prefill of a 7B model, 2 x 7e9 FLOP per token at ~30% "
                                "of ~990 TFLOP/s (bf16)"),
    # One forward reads the 14 GB of bf16 weights: at ~60% of 3.35 TB/s 7.0 ms, plus the 1.8 ms of per-forward
    # overhead measured on the H200: ~114 forwards/s x 16 rows.
    "decode_tok_s": (1_800.0, "assumption: memory-bound decoding of a 7B model's 14 GB of bf16 weights at ~60% of "
                              "3.35 TB/s + 1.8 ms per forward (H200, SmolLM2), 16 rows"),
    "batch": (16, "assumption: the rows decode_tok_s is for"),
    "decode_batch_exponent": (1.0, "assumption: memory-bound, a forward costs about the same for 1 to 16 rows"),
    # The H200 fine-tuned SmolLM2 at 254 tok/s with 1,024 tokens per step: ~4 s of host work per step. A 7B step of
    # 4 x 1.5k tokens adds ~0.8 s of compute (6 x 7e9 FLOP per token at ~30% of 990 TFLOP/s): ~1,200 tok/s.
    "finetune_tok_s": (1_200.0, "assumption: ~4 s of host work per step (H200: 254 tok/s with SmolLM2, 1,024 "
                                "tokens per step) + a 7B model's compute, 4 x 1.5k tokens per step"),
    "update_overhead_s": (60.0, "assumption: compiling a 7B model's update step and writing its adapters"),
    "ref_params": (7e9, "assumption: the GPU's LLM figures are for a 7B model (the paper's, DESIGN.md §8)"),
    "llm_load_s": (120.0, "assumption: reading and converting 14 GB of weights"),
    # docs/ACCELERATOR.md: ResNet-like, 781 steps x 3 vmapped seeds of 32x32x3 images at batch 64 in 4.6 s.
    "step_s": (0.00196, "measured once on an H200 (docs/ACCELERATOR.md): ResNet-like, 781 steps x 3 vmapped seeds "
                        "in 4.6 s, 32x32x3, batch 64"),
    "step_pixels": (32 * 32, "measured once on an H200: 32x32 images"),
    "step_batch": (64, "measured once on an H200: batch 64"),
    "compile_s": (6.8, "measured once on an H200 (docs/ACCELERATOR.md): 5.2-7.8 s per architecture, mean of six"),
    "check_s": (0.15, "assumption: as on the CPU (the tracer runs the cheap stages on the CPU)"),
    "pool_efficiency": (1.0, "assumption: a worker per GPU shares nothing with the others"),
}


def _tpu_source(src: str) -> str:
    return "assumption: no TPU figure was measured; the GPU's (" + src + ")"


_TPU = {k: (v, _tpu_source(s)) for k, (v, s) in _GPU.items()}
_DEFAULTS = {"cpu": _CPU, "gpu": _GPU, "tpu": _TPU}


def default_costs(device: str) -> CostModel:
    """The built-in figures for ``device`` (``cpu`` measured here; ``gpu`` and ``tpu`` mostly assumptions)."""
    if device not in _DEFAULTS:
        raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    table = _DEFAULTS[device]
    return CostModel(device=device, **{k: v for k, (v, _) in table.items()},
                     sources={k: s for k, (_, s) in table.items()})


def load_costs(path: str | Path) -> dict[str, CostModel]:
    """The cost models of a YAML file: ``{device: {field: number, ...}}``; each device's fields replace the
    built-in ones (fields not given keep theirs). Every device of the file is checked; an unknown device or
    field, or a value that is not a positive number, is a ``UserError`` naming ``device.field``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"costs file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{p}: expected a mapping of device ({', '.join(DEVICES)}) to its figures, "
                        f"e.g. 'gpu: {{decode_tok_s: 2000}}'")
    out: dict[str, CostModel] = {}
    for device, figures in data.items():
        if device not in DEVICES:
            raise UserError(f"{p}: unknown device {device!r}: choose one of {', '.join(DEVICES)}")
        if not isinstance(figures, dict):
            raise UserError(f"{p}: {device}: expected a mapping of figures, got {figures!r}")
        unknown = sorted(set(figures) - set(FIELDS))
        if unknown:
            raise UserError(f"{p}: {device}.{unknown[0]}: unknown figure; known: {', '.join(FIELDS)}")
        for k, v in figures.items():
            _check_value(f"{p}: {device}.{k}", v, k)
        values = {k: (int(v) if k in _INTEGER_FIELDS else float(v)) for k, v in figures.items()}
        out[device] = default_costs(device).replaced(values, f"from {p}")
    return out
