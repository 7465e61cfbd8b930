"""What ``cenas reproduce paper`` needs before it starts, checked (``--check``, ``make reproduce CHECK=1``).

Data of the six datasets, Llama-family checkpoints, an accelerator, and free disk for the plan's LoRA
checkpoints; each check says what is missing and how to supply it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from cenas_jax.data import list_datasets
from cenas_jax.reproduce.plan import Plan

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "smollm", "smollm2")  # what cenas_jax.llm.model loads


@dataclasses.dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'MISSING'}] {self.what}: {self.detail}"


def check_data(data_dir: str | None, datasets: Sequence[str]) -> list[Check]:
    """Each dataset's files under ``data_dir`` (via ``cenas_jax.data.list_datasets``)."""
    if not data_dir:
        return [Check("DATA_DIR", False, "not given: set DATA_DIR=/path/to/datasets (see `cenas datasets --data-dir`)")]
    if not Path(data_dir).is_dir():
        return [Check("DATA_DIR", False, f"{data_dir}: no such directory")]
    infos = {i.name: i for i in list_datasets(data_dir)}
    out = [Check("DATA_DIR", True, str(data_dir))]
    for ds in datasets:
        i = infos.get(ds)
        if i is None:
            out.append(Check(f"dataset {ds}", False, "not a dataset cenas_jax knows"))
        elif i.available:
            out.append(Check(f"dataset {ds}", True, f"{i.path} ({i.num_examples or '?'} examples)"))
        else:
            out.append(Check(f"dataset {ds}", False, f"missing: expected {i.expected} under {data_dir}"
                             + (f" ({i.note})" if i.note else "")))
    return out


def check_llms(llms: Sequence[str], expected: int = 3) -> list[Check]:
    """Each checkpoint directory exists, has config.json and weights, and is a Llama-family decoder."""
    if not llms:
        return [Check("LLMS", False, f'not given: set LLMS="dir1 dir2 dir3" ({expected} local Llama-family '
                                     "checkpoints, e.g. DeepSeek-Coder-7B-Instruct, Qwen2.5-Coder-7B-Instruct, "
                                     "Mistral-7B-Instruct)")]
    from cenas_jax.llm.model import LlamaConfig  # imports jax: only when there are checkpoints to check

    out = []
    if len(llms) != expected:
        out.append(Check("LLMS", True, f"{len(llms)} checkpoint(s) given; the paper used {expected}"))
    for p in llms:
        d = Path(p)
        cj = d / "config.json"
        if not d.is_dir():
            out.append(Check(f"LLM {p}", False, "no such directory"))
            continue
        if not cj.is_file():
            out.append(Check(f"LLM {p}", False, "no config.json (expected a Hugging Face checkpoint directory)"))
            continue
        try:
            raw = json.loads(cj.read_text())
            if raw.get("model_type", "llama") not in LLAMA_FAMILY:
                raise ValueError(f"model_type {raw.get('model_type')!r} is not Llama-family ({', '.join(LLAMA_FAMILY)})")
            cfg = LlamaConfig.from_hf_dict(raw)
        except (ValueError, KeyError, TypeError) as e:
            out.append(Check(f"LLM {p}", False, f"config.json: {e}"))
            continue
        weights = list(d.glob("*.safetensors"))
        if not weights:
            out.append(Check(f"LLM {p}", False, "no *.safetensors weights"))
            continue
        gb = sum(w.stat().st_size for w in weights) / 1e9
        out.append(Check(f"LLM {p}", True, f"{raw.get('model_type', 'llama')}, {cfg.num_layers} layers, "
                                            f"hidden {cfg.hidden_size}, {gb:.1f} GB of weights"))
    return out


def check_devices() -> list[Check]:
    """An accelerator JAX can use (the paper scale does not fit a CPU)."""
    try:
        import jax

        devs = jax.devices()
    except Exception as e:  # noqa: BLE001 - no backend at all is a missing item, not a crash
        return [Check("devices", False, f"jax.devices() failed: {e}")]
    kinds = sorted({d.platform for d in devs})
    if all(k == "cpu" for k in kinds):
        return [Check("devices", False, f"no GPU/TPU: jax sees only {len(devs)} CPU device(s); install jax[cuda12] "
                                         "or jax[tpu] on an accelerator machine")]
    return [Check("devices", True, f"{len(devs)} device(s): {', '.join(kinds)} ({devs[0].device_kind})")]


def adapter_bytes(llm_dir: str | None, rank: int = 32) -> float:
    """Bytes of one LoRA checkpoint (adapter + two AdamW moments, fp32) on the 7 projections of every layer."""
    h, inter, layers, kv = 4096, 11008, 32, 4096  # a 7B Llama when the config is unreadable
    if llm_dir and (Path(llm_dir) / "config.json").is_file():
        try:
            d = json.loads((Path(llm_dir) / "config.json").read_text())
            h, inter, layers = d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"]
            kv = h // d["num_attention_heads"] * d.get("num_key_value_heads", d["num_attention_heads"])
        except (KeyError, ValueError, ZeroDivisionError):
            pass
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + inter) * 3)
    return float(per_layer * layers * 4 * 3)


def disk_needed(plan: Plan, llms: Sequence[str]) -> float:
    """Bytes the plan writes: one adapter checkpoint per cycle per run (+ 1 GB of stores and reports)."""
    runs = [s for s in plan.steps if s.kind == "run" and "mutation" not in s.name]
    per_ckpt = max((adapter_bytes(p) for p in llms), default=adapter_bytes(None))
    cycles = max((int(a.split("=")[1]) for s in runs for a in s.args if a.startswith("search.cycles=")), default=22)
    return len(runs) * (cycles + 1) * per_ckpt + 1e9


def check_disk(path: Path, need: float) -> list[Check]:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    ok = free >= need
    return [Check("disk", ok, f"{free / 1e9:.0f} GB free at {probe}, the plan needs about {need / 1e9:.0f} GB")]


def paper_checks(plan: Plan, llms: Sequence[str], data_dir: str | None, datasets: Sequence[str],
                 smoke: bool = False) -> list[Check]:
    """Everything the paper plan needs: data, checkpoints (three, or one for the smoke size), devices, disk."""
    return (check_data(data_dir, datasets) + check_llms(llms, 1 if smoke else 3) + check_devices()
            + check_disk(plan.out, disk_needed(plan, llms)))
