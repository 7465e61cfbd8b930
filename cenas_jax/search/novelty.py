"""The MinHash novelty filter (DESIGN.md §1 step 4, the paper's result 5).

A program becomes a set of 7-token shingles of its *normalised* code:
comments and docstrings stripped (with ``tokenize``; code that does not
tokenize falls back to a regex strip), then tokens matched by
``[A-Za-z_]\\w*|[^\\s]`` — so formatting and comments do not count, names and
numbers do. The shingle set is summarised by a datasketch ``MinHash``
(128 permutations, seeded, SHA-1 based: the same on every machine), indexed
in a ``MinHashLSH`` together with the corpus and every accepted candidate.
A candidate is rejected when the estimated Jaccard similarity to its nearest
indexed program is ≥ τ.

Look-up is exact with respect to the estimate. The LSH uses b bands of r
rows with b = ⌊P(1 − τ_min)⌋ + 1 (P permutations): a program whose estimate
reaches τ_min differs from the query in at most P(1 − τ_min) < b slots, so at
least one band is identical and the program is a candidate (pigeonhole).
datasketch's own (b, r) for τ = 0.85 would miss half the programs at
J = 0.85. Candidates are re-scored with ``MinHash.jaccard``; the nearest one
decides, ties going to the program indexed first.

Delta candidates (DESIGN.md §6). An edit leaves most shingles of the parent
in place, so the full-mode τ = 0.85 against the parent would reject nearly
every real edit. Measured by ``tests/test_novelty.py::
test_delta_similarity_to_parent`` (``-s`` prints the table) on the seed
corpus as of 2026-11-27 (33 programs) plus the test's 3 programs, 117–449
tokens each, with ten kinds of typical LLM edit written as SEARCH/REPLACE
blocks and applied with ``delta.apply_edits`` (change a width, change a
kernel, add BatchNorm, add Dropout, swap an activation, add a conv block,
replace a layer, add a Dense layer, swap every activation, change several
widths; 281 edits) and five kinds of copy (comments added, docstring added,
blank lines, two spacing changes; 180 copies). Jaccard similarity of the
child to its parent:

    real edits, exact:     min 0.683  5% 0.786  median 0.925  95% 0.974  max 1.000
    real edits, estimated: min 0.625  5% 0.766  median 0.930  95% 0.984  max 1.000
    copies:                1.000 (all 180, exact and estimated)

    τ applied to the parent          0.85  0.90  0.95  0.97  0.98  0.99  1.00
    real edits rejected (of 281)      248   197    97    29    18     9     4
    binomial model of the estimate  244.5 185.9  82.9  30.7  18.0   9.2   4.5

(the model: P(reject) = P(Bin(128, J) ≥ 128τ) with the exact J). The gap
between copies and edits is narrow, so the default is τ_delta = 1.0 with the
parent counting: a delta candidate is rejected when its estimate reaches 1.0
against the parent or anything else indexed, i.e. when it is a copy up to
comments and layout. Of the 4 edits (1.4%) rejected at 1.0, three are a
real limit of set-based shingles — a second ``BatchNorm`` line right after
an identical one, or a width changed to a number that already appears in the
same context, adds no new 7-shingle (exact J = 1.0; the jaxpr structure
hash tells such programs apart) — and one an estimate that hit 1.0 at
J = 0.987 (P = J^128). The same τ_delta applies to the whole index, because
a delta lineage is a chain of near neighbours (the grandparent is about as
similar as the parent). ``delta_parent_counts = false`` leaves the parent
out of the look-up (the no-op check of ``delta.apply_edits`` then is the
only guard against a textual copy of it). Full-mode candidates keep τ = 0.85.

Renaming is not copying at the token level: renaming a loop variable used
three times in a 234-token program gives J = 0.86 (still rejected at 0.85),
renaming ``x`` everywhere in it gives J = 0.49. The structure hash of the
evaluator, not this filter, catches such renamed duplicates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from datasketch import MinHash, MinHashLSH

from cenas_jax.config import NoveltyConfig

# The shingles and exact Jaccard live with the other pure functions of program text (the report uses them too).
from cenas_jax.programs import TOKEN_RE, code_tokens, exact_jaccard, mean_pairwise_jaccard, normalize_code, shingles

SCHEME = "affine32"  # datasketch's hashing scheme, pinned so that a library default change cannot alter signatures

Mode = Literal["full", "delta"]


def resample_temperatures(base: float, bump: float, k: int) -> list[float]:
    """Temperatures of the first try and of up to ``k`` resamples after rejections: base, base+bump, ..."""
    if k < 0:
        raise ValueError(f"resample count k={k}: must be >= 0")
    return [base + i * bump for i in range(k + 1)]


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) such that every program with estimated Jaccard ≥ ``threshold`` collides in a band."""
    bands = min(num_perm, int(math.floor(num_perm * (1.0 - threshold) + 1e-9)) + 1)
    return bands, num_perm // bands


@dataclass(frozen=True)
class NoveltyVerdict:
    """The filter's decision on one program.

    ``similarity``: estimated Jaccard to ``nearest_key`` (0.0 and None when no
    indexed program shares a band); ``threshold``: the τ applied;
    ``parent_similarity``: estimated Jaccard to the parent (delta mode; also
    when the parent does not count).
    """

    accepted: bool
    nearest_key: str | None
    similarity: float
    threshold: float
    mode: str
    parent_similarity: float | None = None


class NoveltyFilter:
    """MinHash + LSH index over the corpus and accepted programs; ``check`` decides, ``accept`` indexes."""

    def __init__(self, cfg: NoveltyConfig = NoveltyConfig()) -> None:  # noqa: B008 - frozen dataclass, a shared default is safe
        self.cfg = cfg
        self.threshold_full = cfg.threshold
        self.threshold_delta = cfg.threshold if cfg.threshold_delta is None else cfg.threshold_delta
        self._bands = lsh_bands(cfg.num_perm, min(self.threshold_full, self.threshold_delta))
        self._lsh = MinHashLSH(num_perm=cfg.num_perm, params=self._bands)
        self._empty = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=SCHEME)
        self._sigs: dict[str, MinHash] = {}
        self._order: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sigs)

    def __contains__(self, key: object) -> bool:
        return key in self._sigs

    def signature(self, source: str) -> MinHash:
        """The MinHash of a program's shingle set (seeded: identical across runs and machines)."""
        m = self._empty.copy()  # copying skips re-drawing the seeded permutations
        sh = shingles(source, self.cfg.shingle)
        if sh:
            m.update_batch([s.encode("utf-8") for s in sorted(sh)])
        return m

    def add(self, key: str, source: str) -> None:
        """Index a program (corpus entry or accepted candidate) under a new ``key``."""
        if key in self._sigs:
            raise ValueError(f"novelty index: key {key!r} is already indexed")
        sig = self.signature(source)
        self._lsh.insert(key, sig)
        self._sigs[key] = sig
        self._order[key] = len(self._order)

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Index several (key, source) pairs in order."""
        for key, source in items:
            self.add(key, source)

    accept = add  # an accepted candidate joins the index exactly like a corpus entry

    def similarity(self, key: str, source: str) -> float:
        """Estimated Jaccard similarity of ``source`` to the indexed program ``key``."""
        if key not in self._sigs:
            raise KeyError(f"novelty index: no program with key {key!r}")
        return float(self.signature(source).jaccard(self._sigs[key]))

    def check(self, source: str, mode: Mode = "full", parent_key: str | None = None) -> NoveltyVerdict:
        """Accept or reject ``source`` (nothing is indexed; call ``accept`` for accepted programs)."""
        if mode not in ("full", "delta"):
            raise ValueError(f"novelty mode {mode!r}: expected 'full' or 'delta'")
        if parent_key is not None and parent_key not in self._sigs:
            raise KeyError(f"novelty index: parent {parent_key!r} is not indexed (add the corpus and accepted programs first)")
        tau = self.threshold_delta if mode == "delta" else self.threshold_full
        sig = self.signature(source)
        skip = parent_key if (mode == "delta" and not self.cfg.delta_parent_counts) else None
        best_key, best_sim = None, 0.0
        for key in sorted(self._lsh.query(sig), key=self._order.__getitem__):
            if key == skip:
                continue
            sim = float(sig.jaccard(self._sigs[key]))
            if sim > best_sim:
                best_key, best_sim = key, sim
        parent_sim = float(sig.jaccard(self._sigs[parent_key])) if parent_key is not None else None
        if not self.cfg.enabled:
            return NoveltyVerdict(True, best_key, best_sim, tau, mode, parent_sim)
        return NoveltyVerdict(best_sim < tau, best_key, best_sim, tau, mode, parent_sim)


__all__ = [
    "TOKEN_RE",
    "normalize_code",
    "code_tokens",
    "shingles",
    "exact_jaccard",
    "mean_pairwise_jaccard",
    "resample_temperatures",
    "lsh_bands",
    "NoveltyVerdict",
    "NoveltyFilter",
]
