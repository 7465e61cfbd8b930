"""Prompts for the generator and the completions the CE update trains on (DESIGN.md §1 steps 1 and 7).

Two kinds of prompt, both a system message plus a user message, rendered
from the files in ``search/templates/`` (``string.Template``, ``$name``):

- full mode (``full.txt``): the candidate contract, the task (dataset, input
  shape, classes), ONE reference program with its score and dataset, and the
  request for a complete, better program in one ```` ```python ```` block;
- delta mode (``delta_search_replace.txt`` / ``delta_unified_diff.txt``): the
  contract, the task, a parent elite with its score, and the request for an
  edit in the configured format.

The LLM side decides how to feed a ``Prompt``: ``messages()`` for a chat
template, ``render_plain()`` for completion-style models. Prompts are kept
compact for the embedded SmolLM2-135M (``template_overhead``: the fixed text's
size; measured token counts in DESIGN.md §4).

Training pairs: the CE update fits log p(completion | prompt) on exactly
what the sampler is asked for — in full mode the prompt that showed a
reference and the program in a ```` ```python ```` block (``full_completion``),
in delta mode the parent's prompt and the canonical edit from parent to
child in the configured format (``delta_completion``, via
``delta.make_edit``: a clean edit rather than the raw, possibly noisy text
the model produced).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cenas_jax.programs import clean_program  # shown and trained code-only; defined with the report's helpers
from cenas_jax.search.delta import EDIT_FORMATS, REPLACE_MARK, SEARCH_MARK, make_edit

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAMES = ("system", "contract", "full", "delta_search_replace", "delta_unified_diff")


@cache
def load_template(name: str) -> string.Template:
    """The template ``search/templates/<name>.txt``."""
    path = TEMPLATE_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {name!r} not found: {path}")
    return string.Template(path.read_text(encoding="utf-8").rstrip("\n"))


def template_hash() -> str:
    """A short hash of every template's text: part of the cache key of anything trained on these prompts."""
    h = hashlib.sha256()
    for name in TEMPLATE_NAMES:
        h.update(name.encode() + b"\0" + load_template(name).template.encode() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: ``system`` and ``user`` messages plus what it was built from."""

    system: str
    user: str
    mode: str  # "full" | "delta"
    dataset: str | None = None
    edit_format: str | None = None  # delta mode only

    def messages(self) -> list[dict[str, str]]:
        """Chat messages for a tokenizer's chat template."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def render_plain(self) -> str:
        """One string for completion-style models; the answer follows directly."""
        return f"{self.system}\n\n{self.user}\n\nAnswer:\n"

    @property
    def answer_prefix(self) -> str:
        """The start of every answer, fed to the model after the prompt (see ``answer_frame``)."""
        return answer_frame(self.mode, self.edit_format)[0]

    @property
    def terminator(self) -> str:
        """Where an answer ends (generation stops there; see ``answer_frame``)."""
        return answer_frame(self.mode, self.edit_format)[1]

    @property
    def chars(self) -> int:
        """Characters of both messages (about 2.9 characters per token with SmolLM2's tokenizer)."""
        return len(self.system) + len(self.user)


def answer_frame(mode: str, edit_format: str | None = None) -> tuple[str, str]:
    """(prefix, terminator) of a well-formed answer in ``mode``.

    The sampler is given the prefix as the first tokens of its answer (so a small model
    cannot wander into prose or another language) and stops at the terminator, which is
    put back on the text:

    - full: ```` ```python\n ```` ... ```` \n``` ```` (one program);
    - delta, SEARCH/REPLACE: ``<<<<<<< SEARCH\n`` ... ``>>>>>>> REPLACE`` (one edit block
      per answer; the CE update's delta targets are single blocks too);
    - delta, unified diff: ```` ```diff\n ```` ... ```` \n``` ````.

    Every training completion (``full_completion``, ``delta_completion``) starts with the
    prefix, so training and sampling condition on the same text.
    """
    if mode == "full":
        return "```python\n", "\n```"
    if mode == "delta":
        if edit_format == "search_replace":
            return f"{SEARCH_MARK}\n", REPLACE_MARK
        if edit_format == "unified_diff":
            return "```diff\n", "\n```"
        raise ValueError(f"edit format {edit_format!r}: expected one of {list(EDIT_FORMATS)}")
    raise ValueError(f"prompt mode {mode!r}: expected 'full' or 'delta'")


def _score_text(score: float | None, dataset: str | None) -> str:
    where = f" on {dataset}" if dataset else ""
    if score is None:
        return f"accuracy{where} not measured"
    return f"validation accuracy {float(score):.3f}{where}"


def _task_text(dataset: str | None, input_shape: Sequence[int] | None, num_classes: int | None) -> str:
    parts = [f"Dataset: {dataset or 'unspecified'}"]
    if input_shape is not None:
        parts.append("inputs " + "x".join(str(int(d)) for d in input_shape))
    if num_classes is not None:
        parts.append(f"{int(num_classes)} classes")
    return ", ".join(parts) + "."


def _program_text(source: str) -> str:
    return clean_program(source).strip("\n")


def full_prompt(
    source: str,
    score: float | None = None,
    dataset: str | None = None,
    *,
    reference_dataset: str | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Prompt:
    """Full-code prompt: the contract, the task ``dataset``, one reference program with its score.

    ``score`` is the reference's validation accuracy (fraction) on
    ``reference_dataset`` (default: ``dataset``); None when not measured.
    """
    ref_ds = reference_dataset or dataset
    user = load_template("full").substitute(
        contract=load_template("contract").template,
        task=_task_text(dataset, input_shape, num_classes),
        score=_score_text(score, ref_ds),
        source=_program_text(source),
        dataset=dataset or "the dataset",
    )
    return Prompt(load_template("system").template, user, "full", dataset, None)


def delta_prompt(
    source: str,
    score: float | None = None,
    dataset: str | None = None,
    edit_format: str = "search_replace",
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Prompt:
    """Delta prompt: the contract, the task, a parent elite with its score, the request for an edit."""
    if edit_format not in EDIT_FORMATS:
        raise ValueError(f"edit format {edit_format!r}: expected one of {list(EDIT_FORMATS)}")
    user = load_template(f"delta_{edit_format}").substitute(
        contract=load_template("contract").template,
        task=_task_text(dataset, input_shape, num_classes),
        score=_score_text(score, dataset),
        source=_program_text(source),
    )
    return Prompt(load_template("system").template, user, "delta", dataset, edit_format)


def full_completion(source: str) -> str:
    """What a full-mode answer should be: the program in one ```python block."""
    return f"```python\n{_program_text(source)}\n```"


# Unchanged lines around each change in a training edit: short blocks are what a small model learns to
# write (with 2, SmolLM2-135M's SEARCH sections ran on into long copies of the parent).
EDIT_CONTEXT = 1


def delta_completion(parent_source: str, child_source: str, edit_format: str = "search_replace") -> str:
    """What a delta-mode answer should be: the canonical edit from the cleaned parent (as the prompt
    shows it) to the cleaned child in ``edit_format`` (``EDIT_CONTEXT`` unchanged lines around each change)."""
    return make_edit(clean_program(parent_source), clean_program(child_source), edit_format,
                     context=EDIT_CONTEXT).rstrip("\n")


def full_training_pair(
    reference_source: str,
    program: str,
    score: float | None = None,
    dataset: str | None = None,
    **task: object,
) -> tuple[Prompt, str]:
    """(prompt showing ``reference_source``, ``program`` as the answer): a CE-update example in full mode."""
    return full_prompt(reference_source, score, dataset, **task), full_completion(program)  # type: ignore[arg-type]


def delta_training_pair(
    parent_source: str,
    child_source: str,
    score: float | None = None,
    dataset: str | None = None,
    edit_format: str = "search_replace",
    **task: object,
) -> tuple[Prompt, str]:
    """(parent's delta prompt, canonical edit to ``child_source``): a CE-update example in delta mode."""
    prompt = delta_prompt(parent_source, score, dataset, edit_format, **task)  # type: ignore[arg-type]
    return prompt, delta_completion(parent_source, child_source, edit_format)


def template_overhead(mode: str = "full", edit_format: str = "search_replace") -> int:
    """Characters a prompt adds around the program it shows (system + user, empty program)."""
    p = full_prompt("", 0.5, "digits") if mode == "full" else delta_prompt("", 0.5, "digits", edit_format)
    return p.chars


__all__ = [
    "Prompt",
    "answer_frame",
    "clean_program",
    "TEMPLATE_DIR",
    "load_template",
    "template_hash",
    "full_prompt",
    "delta_prompt",
    "full_completion",
    "delta_completion",
    "full_training_pair",
    "delta_training_pair",
    "template_overhead",
]
