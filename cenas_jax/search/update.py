"""The CE update's training pairs, as pure functions: what the loop hands ``Generator.update``.

A cycle's update (DESIGN.md §1) fits the generator to S_t ∪ L:

- ``elite_pairs``: each elite of S_t as the exact prompt it was sampled from → its canonical answer (the
  program in full mode, the canonical edit from its parent in delta mode). A delta elite whose edit cannot be
  written (``prompts.delta_completion`` raises: e.g. the program equals its parent once cleaned) is trained
  as a full program instead: the full-mode prompt showing its parent as the reference → the program. Such
  elites are listed in ``ElitePairs.as_full`` (the loop logs them and counts them in the cycle's record).
- ``replay_pairs``: ``n`` pairs from the seed corpus L, in the modes the run samples (the warm start is
  ``replay_pairs`` alone).
- ``within_budget``: the pairs, in order, until the update's token budget is spent, counted by a callable
  (the generator's tokenizer: ``LLMGenerator.count_tokens``).
- ``warm_start_key``: the warm start's cache key, from everything the adapter depends on.

Nothing here reads the store, the run directory or the sandbox: the loop gathers the inputs
(``EliteInput``) and records the outcome. The pairs' order is part of the contract: the update's batches
(and so its result on a seed) follow it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from cenas_jax.search import delta as delta_mod
from cenas_jax.search import prompts as prompts_mod
from cenas_jax.search.mutation import mutate

Pair = tuple[Any, str]  # (prompts.Prompt, completion text)
# Tokens a (prompt, completion) pair costs the update; the LLM generator's counts the ids its update trains on.
CountTokens = Callable[[Any, str], float]

# Bumped when the warm start's recipe changes in a way the cache key cannot see (how pairs become tokens).
WARM_START_RECIPE = 2

# Characters per token of code with SmolLM2's tokenizer (measured, ≈2.9): the estimate ``chars_estimate`` uses.
CHARS_PER_TOKEN_ESTIMATE = 3


@dataclass(frozen=True)
class EliteInput:
    """What the pairs need of one elite (the loop reads it from the store).

    ``prompt``: the user message it was sampled from (None: it was not sampled, no pair); ``parent_source`` /
    ``parent_dataset`` / ``parent_accuracy``: its parent's program, dataset and latest proxy accuracy (delta
    elites; None when the parent is not stored)."""

    id: str
    mode: str
    dataset: str | None
    prompt: str | None
    source: str
    parent_source: str | None = None
    parent_dataset: str | None = None
    parent_accuracy: float | None = None


@dataclass(frozen=True)
class AsFull:
    """A delta elite trained as a full program, and why its edit could not be written."""

    id: str
    reason: str


@dataclass(frozen=True)
class ElitePairs:
    """``pairs`` in elite order; ``as_full``: the delta elites among them trained as full programs;
    ``skipped``: the elites without a sampling prompt (no pair)."""

    pairs: tuple[Pair, ...]
    as_full: tuple[AsFull, ...] = ()
    skipped: tuple[str, ...] = ()


def elite_pairs(elites: Sequence[EliteInput], edit_format: str) -> ElitePairs:
    """The CE-update pairs of the elites: the exact prompt each was sampled from → its canonical answer."""
    system = prompts_mod.load_template("system").template
    pairs: list[Pair] = []
    as_full: list[AsFull] = []
    skipped: list[str] = []
    for e in elites:
        if e.prompt is None:
            skipped.append(e.id)
            continue
        prompt = prompts_mod.Prompt(system=system, user=e.prompt, mode=e.mode, dataset=e.dataset,
                                    edit_format=edit_format if e.mode == "delta" else None)
        if e.mode == "delta" and e.parent_source is not None:
            try:
                completion = prompts_mod.delta_completion(e.parent_source, e.source, edit_format)
            except Exception as err:  # noqa: BLE001 - any failure to write the edit: the program is trained instead
                # The sampling prompt asked for an edit, so the answer's frame would not match a program: the
                # pair is the full-mode prompt a full slot shows with this parent as its reference elite.
                reason = f"{type(err).__name__}: {str(err)[:200]}"
                as_full.append(AsFull(e.id, reason))
                pairs.append((prompts_mod.full_prompt(e.parent_source, score=e.parent_accuracy, dataset=e.dataset,
                                                      reference_dataset=e.parent_dataset),
                               prompts_mod.full_completion(e.source)))
                continue
        else:
            completion = prompts_mod.full_completion(e.source)
        pairs.append((prompt, completion))
    return ElitePairs(tuple(pairs), tuple(as_full), tuple(skipped))


def replay_count(n_elite_pairs: int, replay_weight: float) -> int:
    """How many corpus pairs a cycle's update replays beside ``n_elite_pairs`` elite pairs."""
    return int(math.ceil(replay_weight * max(n_elite_pairs, 1)))


def replay_pairs(corpus: Sequence[Any], n: int, *, seed: int, seed_offset: int, mode: str, delta_share: float,
                 dataset: str | None, edit_format: str) -> list[Pair]:
    """``n`` training pairs from the corpus L (entries with ``.source``), in the modes the run samples.

    Full mode: a prompt showing another corpus program → the program. Delta mode (the corpus holds no
    edits): the program's delta prompt → the canonical edit to a random mutation of it, so θ_0 knows the
    edit format before cycle 0. Drawn from ``numpy.random.default_rng([seed, 99, seed_offset])``: the warm
    start uses offset 0, cycle t's update t + 1.
    """
    if not corpus or n <= 0:
        return []
    rng = np.random.default_rng([seed, 99, seed_offset])
    share = {"full": 0.0, "delta": 1.0, "mixed": delta_share}[mode]
    out: list[Pair] = []
    order = rng.permutation(len(corpus))
    for k in range(n):
        target = corpus[int(order[k % len(order)])]
        if rng.random() < share:
            child, _ = mutate(target.source, rng, n_mutations=1)  # one edit block, as sampled answers have
            if child.strip() != target.source.strip():
                try:
                    out.append(prompts_mod.delta_training_pair(target.source, child, None, dataset, edit_format))
                    continue
                except (ValueError, delta_mod.DeltaError):
                    pass  # no canonical edit between the two: fall back to a full-mode pair
        ref = corpus[int(rng.integers(len(corpus)))]
        out.append((prompts_mod.full_prompt(ref.source, score=None, dataset=dataset),
                    prompts_mod.full_completion(target.source)))
    return out


def chars_estimate(prompt: Any, completion: str) -> Fraction:
    """Tokens of a pair estimated from its characters: for generators without a tokenizer only (the scripted
    test double, the mutation control, which learns nothing from the pairs). Exact (a fraction), so a budget
    compares as characters against ``CHARS_PER_TOKEN_ESTIMATE`` x the budget would."""
    return Fraction(len(prompt.user) + len(prompt.system) + len(completion), CHARS_PER_TOKEN_ESTIMATE)


def within_budget(pairs: Sequence[Pair], budget_tokens: int, count_tokens: CountTokens) -> list[Pair]:
    """The pairs, in order, until ``budget_tokens`` is spent; the first is always kept (an update of one
    long pair beats none)."""
    out: list[Pair] = []
    used: Any = 0
    for p, c in pairs:
        n = count_tokens(p, c)
        if out and used + n > budget_tokens:
            break
        out.append((p, c))
        used += n
    return out


def warm_start_key(pairs: Sequence[Pair], *, model: str, lora: Mapping[str, Any], finetune: Mapping[str, Any],
                   passes: int, learning_rate: float | None, recipe: int = WARM_START_RECIPE) -> str:
    """The warm start's cache key: the model, the adapter and update settings, the exact training pairs
    (which cover the corpus, the templates, the modes and the seed), and how pairs become tokens (``recipe``:
    the answer prefix convention)."""
    h = hashlib.sha256()
    for p, c in pairs:
        for part in (p.system, p.user, getattr(p, "answer_prefix", ""), c):
            h.update(part.encode() + b"\0")
    return hashlib.sha256(json.dumps({
        "model": model,
        "lora": dict(lora),
        "finetune": dict(finetune),
        "passes": passes,
        "learning_rate": learning_rate,
        "pairs": h.hexdigest(),
        "recipe": recipe,
    }, sort_keys=True).encode()).hexdigest()[:16]


__all__ = [
    "AsFull",
    "EliteInput",
    "ElitePairs",
    "WARM_START_RECIPE",
    "chars_estimate",
    "elite_pairs",
    "replay_count",
    "replay_pairs",
    "warm_start_key",
    "within_budget",
]
