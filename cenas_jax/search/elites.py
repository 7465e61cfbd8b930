"""Elite selection (the CE rule), parents for delta prompts, and per-dataset quality.

The CE rule (DESIGN.md §1 step 6, §6 "Definitions"):

- γ_t is the (1 − ρ) quantile of quality over cycle t's trained valid
  candidates, with numpy's ``method="higher"``: the smallest observed quality
  at or above the interpolated quantile. γ_t is therefore always a quality
  some candidate reached (what the report draws against E* = {Q ≥ γ*}), and
  S_t = {Q ≥ γ_t} holds N − ⌈(1 − ρ)(N − 1)⌉ candidates without ties (the
  same count numpy's "linear" gives), at least one, all of them at ρ = 1;
  ties at γ_t all enter.
- An absolute floor, when set, also applies: S_t = {Q ≥ max(γ_t, floor)}.
- Order inside S_t (and truncation by ``max_elites``): higher quality first,
  ties to fewer parameters, then to the earlier candidate (``order``).
- An empty S_t (no trained valid candidate, or none above the floor) reuses
  S_{t−1} (``previous``) and says so.
- Elite memory (off by default): previous elites stay in S_t while their
  quality still reaches this cycle's threshold.

Parents for delta prompts are drawn *uniformly* from S_t: the CE update fits
the empirical elite distribution p̂_{S_t}, which is uniform over S_t, and
parents drawn the same way keep the proposal consistent with it. The draw
is balanced (every elite is used once before any is used twice, each pass in
a fresh random order), deterministic for a given ``numpy.random.Generator``.

Quality Q (DESIGN.md §6 "Definitions"): validation accuracy divided by the median accuracy of the seed
corpus on the same dataset under the same recipe; raw accuracy is kept beside Q. Why the median ratio
rather than raw accuracy or a z-score: the same bullet of DESIGN.md §6.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class EliteCandidate:
    """What selection needs of a candidate: its id, quality Q, parameter count, position in the cycle."""

    id: str
    quality: float | None
    params: int | None = None
    order: int = 0
    trained: bool = True  # trained and valid; anything else never becomes an elite


@dataclass(frozen=True)
class EliteSelection:
    """The outcome of one cycle's selection.

    ``gamma``: γ_t (None when no candidate was eligible); ``threshold``: the
    bar applied, max(γ_t, floor); ``elites``: S_t, best first;
    ``reused_previous``: S_t was empty and S_{t−1} stands in; ``num_eligible``:
    the N of the quantile.
    """

    gamma: float | None
    threshold: float | None
    elites: tuple[Any, ...]
    reused_previous: bool = False
    num_eligible: int = 0
    ids: tuple[str, ...] = field(default=())


def _eligible(c: Any) -> bool:
    q = c.quality
    return bool(getattr(c, "trained", True)) and q is not None and math.isfinite(float(q))


def _rank_key(c: Any) -> tuple[float, float, int]:
    params = c.params if c.params is not None else math.inf
    return (-float(c.quality), float(params), int(c.order))


def elite_order(candidates: Sequence[Any]) -> list[Any]:
    """Candidates best first: higher quality, then fewer parameters, then earlier."""
    return sorted(candidates, key=_rank_key)


def select_elites(
    candidates: Sequence[Any],
    rho: float,
    floor: float | None = None,
    previous: Sequence[Any] = (),
    memory: bool = False,
    max_elites: int | None = None,
) -> EliteSelection:
    """S_t and γ_t of one cycle by the CE quantile rule (see the module docstring).

    ``candidates``: objects with ``id``, ``quality``, ``params``, ``order``
    and optionally ``trained`` (``EliteCandidate``); ineligible ones (not
    trained, quality None or NaN) are ignored. ``previous``: S_{t−1}.
    """
    if not 0 < rho <= 1:
        raise ValueError(f"elite rho={rho}: must be in (0, 1]")
    if max_elites is not None and max_elites < 1:
        raise ValueError(f"max_elites={max_elites}: must be >= 1")
    pool = [c for c in candidates if _eligible(c)]
    prev = tuple(previous)
    if not pool:
        return EliteSelection(None, None, prev, reused_previous=True, num_eligible=0, ids=tuple(e.id for e in prev))
    qualities = np.array([float(c.quality) for c in pool])
    gamma = float(np.quantile(qualities, 1.0 - rho, method="higher"))
    threshold = gamma if floor is None else max(gamma, float(floor))
    chosen = [c for c in pool if c.quality >= threshold]
    if memory:
        seen = {c.id for c in chosen}
        chosen += [e for e in prev if e.id not in seen and _eligible(e) and e.quality >= threshold]
    chosen = elite_order(chosen)
    if max_elites is not None:
        chosen = chosen[:max_elites]
    if not chosen:
        return EliteSelection(gamma, threshold, prev, reused_previous=True, num_eligible=len(pool), ids=tuple(e.id for e in prev))
    return EliteSelection(gamma, threshold, tuple(chosen), False, len(pool), tuple(c.id for c in chosen))


def draw_parents(elites: Sequence[T], n: int, rng: np.random.Generator) -> list[T]:
    """``n`` parents drawn uniformly and balanced from ``elites`` (each used once per pass, passes shuffled)."""
    if n < 0:
        raise ValueError(f"draw_parents: n={n} must be >= 0")
    items = list(elites)
    if not items and n > 0:
        raise ValueError("draw_parents: no elites to draw parents from")
    out: list[T] = []
    while len(out) < n:
        perm = rng.permutation(len(items))
        out.extend(items[int(i)] for i in perm[: n - len(out)])
    return out


def reference_accuracy(reference: Mapping[str, Any], dataset: str) -> float:
    """The corpus's reference accuracy on ``dataset``: the median of its accuracies (or the given number)."""
    if dataset not in reference:
        known = ", ".join(sorted(reference)) or "none"
        raise KeyError(f"no reference accuracy for dataset {dataset!r} (evaluate the corpus on it first; known: {known})")
    value = reference[dataset]
    if isinstance(value, (int, float)):
        ref = float(value)
    else:
        accs = [float(a) for a in value if a is not None and math.isfinite(float(a))]
        if not accs:
            raise ValueError(f"reference accuracies for dataset {dataset!r}: none is a number")
        ref = float(np.median(accs))
    if not ref > 0:
        raise ValueError(f"reference accuracy for dataset {dataset!r} is {ref}: must be > 0 to normalise against")
    return ref


def normalize_quality(accuracy: float, dataset: str, reference: Mapping[str, Any]) -> float:
    """Q = accuracy / median corpus accuracy on ``dataset``.

    ``reference`` maps a dataset name to the corpus's accuracies on it (a
    sequence; its median is taken) or directly to the reference accuracy (a
    number). Accuracies are fractions in [0, 1]; Q is unitless (1 = a typical
    corpus program).
    """
    return float(accuracy) / reference_accuracy(reference, dataset)


__all__ = [
    "EliteCandidate",
    "EliteSelection",
    "elite_order",
    "select_elites",
    "draw_parents",
    "reference_accuracy",
    "normalize_quality",
]
