"""The MinHash novelty filter (DESIGN.md §1 step 4, the paper's result 5).

A program is reduced to the k-token shingles of its normalised code (``cenas_jax.programs``; k = 7),
summarised by a seeded datasketch ``MinHash`` (128 permutations) and indexed, with the corpus and every
accepted candidate, in a ``MinHashLSH`` banded so that no program at or above the threshold is missed
(``lsh_bands``). ``NoveltyFilter.check`` rejects a program whose estimated Jaccard similarity to its
nearest indexed program reaches τ (full mode) or τ_δ (delta mode, the parent included unless
``novelty.delta_parent_counts`` is off); ``accept`` indexes an accepted one. How the look-up is made
exact, and the measurement behind τ_δ = 1.0: DESIGN.md §1 "The novelty filter".
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
