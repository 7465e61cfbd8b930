"""A generator without an LLM: random, syntactically valid edits of the program shown in the prompt (a control).

The controls experiment (``experiments/configs/controls_mutation.yaml``) asks
whether the gains of a run can be credited to the CE update: the same loop,
budget and prompts, with the LLM replaced by random mutation of the parent
(delta prompts) or of the reference program (full prompts). ``MutationGenerator``
implements the ``Generator`` protocol:

- the program is the one in the prompt's ```` ```python ```` block after
  "Parent program" / "Reference program" (the templates in ``search/templates``);
- a delta answer carries one mutation (a second one with probability
  ``SECOND_MUTATION_P``), a full answer 3-5 (``FULL_MUTATIONS``: one edit of
  the reference would be a near-copy the novelty filter rejects), one more at
  a resample's raised temperature; each is located with ``ast`` so that the
  result parses: change a Dense/Conv width or a width field (×½, ×¾, ×1.5, ×2),
  change a Conv kernel size, swap an activation, insert a LayerNorm /
  BatchNorm / Dropout line after a layer (BatchNorm and Dropout only in a
  function that has ``train``), remove such a line, change a Dropout rate,
  duplicate a Dense/Conv line;
- a delta prompt is answered with the edit in the prompt's format
  (``delta.make_edit``), a full prompt with the program in a ```` ```python ````
  block;
- deterministic: generation i of a call is keyed by (seed, seeds[i]) and nothing else;
- ``update`` learns nothing (an empty ``UpdateResult``), so a run with this
  generator has the loop's selection but no CE update.

Shape errors are possible (a kernel larger than a feature map with VALID
padding, a duplicated strided conv on a small map): they are part of what the
control measures. Measured on the 33-program corpus with digits inputs,
about 9 in 10 mutations pass the build and shape check (tests/test_mutation.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from cenas_jax.search.delta import EDIT_FORMATS, make_edit
from cenas_jax.search.generator import Generation, OnBatch, UpdateResult

SECOND_MUTATION_P = 0.3
# A full prompt asks for "a complete, different program": one edit of the reference is a near-copy that the
# novelty filter rejects (one changed line moves the 7-token-shingle Jaccard of a corpus program only to
# about 0.9, above tau = 0.85), so a full answer carries FULL_MUTATIONS edits (3-5).
FULL_MUTATIONS = (3, 5)
# A resample after a near-duplicate comes with a raised temperature: above this, one more edit.
HOT_TEMPERATURE = 0.75
MAX_TRIES = 24  # operators tried before giving up on a program (then the answer is an unchanged copy)
CHARS_PER_TOKEN = 2.9  # SmolLM2's tokenizer on code (search/prompts.py): num_tokens is comparable across generators

_PROGRAM_RE = re.compile(r"(?:Parent|Reference) program[^\n]*\n```python\n(.*?)\n```", re.DOTALL)
_ANY_BLOCK_RE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "elu", "swish", "leaky_relu", "softplus")
_ACT_RE = re.compile(r"\bnn\.(" + "|".join(ACTIVATIONS) + r")\b")
_WIDTH_RE = re.compile(r"\bnn\.(Dense|Conv|ConvTranspose)\(\s*(?:features\s*=\s*)?(\d+)")
_FIELD_WIDTH_RE = re.compile(r"^(\s*\w*(?:hidden|width|features|channels|filters|dim)\w*\s*:\s*int\s*=\s*)(\d+)(.*)$")
_KERNEL_RE = re.compile(r"\bnn\.Conv\([^()]*?\((\d+),\s*(\d+)\)")
_DROPOUT_RATE_RE = re.compile(r"\bnn\.Dropout\(\s*(?:rate\s*=\s*)?(0?\.\d+)")
_LAYER_LINE_RE = re.compile(r"\bnn\.(Dense|Conv)\(")
_REMOVABLE_RE = re.compile(r"^\s*(\w+)\s*=\s*nn\.(Dropout|BatchNorm|LayerNorm|GroupNorm)\(.*\)\(\s*\1\s*\)\s*$")
WIDTH_FACTORS = (0.5, 0.75, 1.5, 2.0)
KERNELS = (1, 3, 5, 7)
DROPOUT_RATES = (0.1, 0.2, 0.3, 0.5)


def program_in_prompt(text: str) -> str | None:
    """The program a prompt shows (parent or reference), or None when the prompt holds no ```python block."""
    m = _PROGRAM_RE.search(text)
    if m is None:
        blocks = _ANY_BLOCK_RE.findall(text)
        return blocks[-1] if blocks else None
    return m.group(1)


@dataclass(frozen=True)
class _Site:
    """A single-line assignment ``name = ...`` inside a function: where a layer line can be inserted or copied."""

    lineno: int  # 0-based line index
    target: str
    has_train: bool  # the enclosing function takes ``train``


def _sites(source: str) -> list[_Site]:
    tree = ast.parse(source)
    out: list[_Site] = []

    def visit_fn(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        has_train = any(a.arg == "train" for a in fn.args.args + fn.args.kwonlyargs)
        for node in ast.walk(fn):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.lineno == node.end_lineno):
                out.append(_Site(node.lineno - 1, node.targets[0].id, has_train))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            visit_fn(node)
    uniq = {s.lineno: s for s in out}  # nested functions are walked twice; keep one site per line
    return [uniq[k] for k in sorted(uniq)]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _scaled(n: int, rng: np.random.Generator) -> int:
    for _ in range(8):
        m = max(4, int(round(n * float(rng.choice(WIDTH_FACTORS)))))
        if m != n:
            return m
    return n + 8


# Each operator takes the program's lines and an rng and returns new lines, or None when it does not apply.
def _op_width(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    hits = [(i, m) for i, ln in enumerate(lines) for m in _WIDTH_RE.finditer(ln)]
    fields = [(i, m) for i, ln in enumerate(lines) if (m := _FIELD_WIDTH_RE.match(ln))]
    if not hits and not fields:
        return None
    pick = int(rng.integers(len(hits) + len(fields)))
    out = list(lines)
    if pick < len(hits):
        i, m = hits[pick]
        n = int(m.group(2))
        out[i] = lines[i][: m.start(2)] + str(_scaled(n, rng)) + lines[i][m.end(2):]
    else:
        i, m = fields[pick - len(hits)]
        out[i] = m.group(1) + str(_scaled(int(m.group(2)), rng)) + m.group(3)
    return out


def _op_kernel(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    hits = [(i, m) for i, ln in enumerate(lines) for m in _KERNEL_RE.finditer(ln)]
    if not hits:
        return None
    i, m = hits[int(rng.integers(len(hits)))]
    k = int(m.group(1))
    choices = [c for c in KERNELS if c != k]
    new = int(rng.choice(choices))
    out = list(lines)
    out[i] = lines[i][: m.start(1)] + f"{new}, {new}" + lines[i][m.end(2):]
    return out


def _op_activation(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    hits = [(i, m) for i, ln in enumerate(lines) for m in _ACT_RE.finditer(ln)]
    if not hits:
        return None
    i, m = hits[int(rng.integers(len(hits)))]
    new = str(rng.choice([a for a in ACTIVATIONS if a != m.group(1)]))
    out = list(lines)
    out[i] = lines[i][: m.start(1)] + new + lines[i][m.end(1):]
    return out


def _op_insert_layer(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    sites = [s for s in _sites("\n".join(lines)) if _LAYER_LINE_RE.search(lines[s.lineno]) or "(x)" in lines[s.lineno]]
    if not sites:
        return None
    s = sites[int(rng.integers(len(sites)))]
    kinds = ["LayerNorm"] + (["BatchNorm", "Dropout"] if s.has_train else [])
    kind = str(rng.choice(kinds))
    v = s.target
    layer = {
        "LayerNorm": "nn.LayerNorm()",
        "BatchNorm": "nn.BatchNorm(use_running_average=not train)",
        "Dropout": f"nn.Dropout({float(rng.choice(DROPOUT_RATES))}, deterministic=not train)",
    }[kind]
    out = list(lines)
    out.insert(s.lineno + 1, f"{_indent(lines[s.lineno])}{v} = {layer}({v})")
    return out


def _op_remove_layer(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    hits = [i for i, ln in enumerate(lines) if _REMOVABLE_RE.match(ln)]
    if not hits:
        return None
    i = hits[int(rng.integers(len(hits)))]
    return lines[:i] + lines[i + 1:]


def _op_dropout_rate(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    hits = [(i, m) for i, ln in enumerate(lines) for m in _DROPOUT_RATE_RE.finditer(ln)]
    if not hits:
        return None
    i, m = hits[int(rng.integers(len(hits)))]
    old = float(m.group(1))
    new = float(rng.choice([r for r in DROPOUT_RATES if abs(r - old) > 1e-9]))
    out = list(lines)
    out[i] = lines[i][: m.start(1)] + str(new) + lines[i][m.end(1):]
    return out


def _op_duplicate_layer(lines: list[str], rng: np.random.Generator) -> list[str] | None:
    # Only a line that maps its target to itself (x = f(x)) keeps the data flow when repeated.
    sites = [s for s in _sites("\n".join(lines))
             if _LAYER_LINE_RE.search(lines[s.lineno]) and re.search(rf"\(\s*{re.escape(s.target)}\s*\)", lines[s.lineno])]
    if not sites:
        return None
    s = sites[int(rng.integers(len(sites)))]
    out = list(lines)
    out.insert(s.lineno + 1, lines[s.lineno])
    return out


OPERATORS: dict[str, Callable[[list[str], np.random.Generator], list[str] | None]] = {
    "width": _op_width,
    "kernel": _op_kernel,
    "activation": _op_activation,
    "insert_layer": _op_insert_layer,
    "remove_layer": _op_remove_layer,
    "dropout_rate": _op_dropout_rate,
    "duplicate_layer": _op_duplicate_layer,
}


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def mutate(source: str, rng: np.random.Generator, n_mutations: int = 1) -> tuple[str, list[str]]:
    """``source`` with ``n_mutations`` random operators applied (each result parses); returns (program, operator names).

    Returns the program unchanged with an empty list when no operator applies.
    """
    original = source.replace("\r\n", "\n").split("\n")
    lines = list(original)
    applied: list[str] = []
    names = list(OPERATORS)
    for _ in range(MAX_TRIES):
        # Two mutations can undo each other (relu -> gelu -> relu): go on until the program differs.
        if len(applied) >= n_mutations and _stripped(lines) != _stripped(original):
            break
        name = names[int(rng.integers(len(names)))]
        new = OPERATORS[name](lines, rng)
        if new is None or new == lines or not _parses("\n".join(new)):
            continue
        lines = new
        applied.append(name)
    if _stripped(lines) == _stripped(original):
        return source, []
    return "\n".join(lines), applied


def _stripped(lines: list[str]) -> list[str]:
    return [ln.rstrip() for ln in lines if ln.strip()]


@dataclass
class MutationGenerator:
    """The Generator protocol with random mutation instead of an LLM (``search.generator: mutation``)."""

    learns: ClassVar[bool] = False  # update() changes nothing: the loop skips the warm start
    seed: int = 0
    edit_format: str = "search_replace"
    fingerprint: str = "mutation-v1"
    calls: int = 0
    operator_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.edit_format not in EDIT_FORMATS:
            raise ValueError(f"edit_format {self.edit_format!r}: expected one of {list(EDIT_FORMATS)}")

    def generate(self, prompts: Sequence[object], temperatures: Sequence[float], seeds: Sequence[int], *,
                 skip: Collection[int] = (), on_batch: OnBatch | None = None) -> list[Generation | None]:
        """One mutation per prompt: an edit (delta prompts) or a ```python program (full prompts).

        Generation i draws from ``default_rng([seed, seeds[i]])`` only; each is its own batch.
        """
        if len(seeds) != len(prompts) or len(temperatures) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts need as many temperatures and seeds, "
                             f"got {len(temperatures)} and {len(seeds)}")
        out: list[Generation | None] = [None] * len(prompts)
        for i, p in enumerate(prompts):
            if i in skip:
                continue
            out[i] = g = self._one(p, float(temperatures[i]), int(seeds[i]))
            if on_batch is not None:
                on_batch([i], [g])
        self.calls += 1
        return out

    def _one(self, p: object, temperature: float, seed: int) -> Generation:
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(seed) & 0xFFFFFFFF])
        user = getattr(p, "user", str(p))
        parent = program_in_prompt(user)
        mode = getattr(p, "mode", None) or ("delta" if "SEARCH" in user or "```diff" in user else "full")
        fmt = getattr(p, "edit_format", None) or self.edit_format
        if parent is None:  # nothing to mutate: an answer the loop will record as invalid
            text = "" if mode == "delta" else "```python\n```"
            return Generation(text=text, num_tokens=1, finish_reason="eos")
        if mode == "delta":
            n = 2 if rng.random() < SECOND_MUTATION_P else 1
        else:
            n = int(rng.integers(FULL_MUTATIONS[0], FULL_MUTATIONS[1] + 1))
        n += int(temperature > HOT_TEMPERATURE)
        child, applied = mutate(parent, rng, n)
        for name in applied:
            self.operator_counts[name] = self.operator_counts.get(name, 0) + 1
        if mode == "delta":
            text = make_edit(parent, child, fmt) if applied else ""  # no operator applied: an empty (invalid) edit
        else:
            text = f"```python\n{child.strip(chr(10))}\n```"
        return Generation(text=text, num_tokens=max(1, int(round(len(text) / CHARS_PER_TOKEN))), finish_reason="eos")

    def update(self, examples: Sequence[tuple[object, str]], seed: int, epochs: float | None = None,
               learning_rate: float | None = None) -> UpdateResult:
        """No learning: the control keeps its distribution fixed."""
        return UpdateResult()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mutation.json").write_text(json.dumps({
            "seed": self.seed, "edit_format": self.edit_format, "calls": self.calls,
            "operator_counts": self.operator_counts,
        }, sort_keys=True))

    def restore(self, directory: Path) -> None:
        data = json.loads((Path(directory) / "mutation.json").read_text())
        self.calls = int(data["calls"])
        self.operator_counts = {str(k): int(v) for k, v in data["operator_counts"].items()}


__all__ = ["MutationGenerator", "mutate", "program_in_prompt", "OPERATORS"]
