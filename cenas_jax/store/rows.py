"""What the run store's named queries return, and the labels stored in its rows: frozen dataclasses
(``CandidateRow`` to write; ``Evaluation``, ``StoredCandidate``, ``TrainedCandidate``, ``EliteSet``, ``References``
read back), the ``StrEnum``s ``Verdict`` and ``EvalStatus`` (stored as their readable strings) and the budget labels.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Mapping
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, fields
from typing import Any


def source_hash(source: str) -> str:
    """Hex SHA-256 of a program's text (exact text, not normalised)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CandidateRow:
    """A program as stored; ``id`` is chosen by the caller (deterministic ids make resume idempotent)."""

    id: str
    source: str
    run_id: int | None = None
    cycle: int | None = None
    idx: int | None = None
    mode: str | None = None
    parent_id: str | None = None
    dataset: str | None = None
    prompt: str | None = None
    raw_text: str | None = None
    token_count: int | None = None
    finish_reason: str | None = None
    attempt: int = 0
    temperature: float | None = None


class Verdict(enum.StrEnum):
    """A generation's verdict (the ``candidates.verdict`` column; NULL: not checked yet).

    Stored as the member's value, the same readable string as before the enum existed, so older runs open
    unchanged. ``INVALID``: failed before training (an edit that does not apply, a cheap check);
    ``VALID``: passed the cheap checks, novelty not decided yet; ``ACCEPTED``: valid and novel, sent to
    training; ``DUPLICATE``: valid but a near-copy of an earlier program (rejected, resampled)."""

    INVALID = "invalid"
    VALID = "valid"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


# The verdicts of a generation that passed the cheap checks (the valid rate's numerator).
VALID_VERDICTS = frozenset({Verdict.VALID, Verdict.ACCEPTED, Verdict.DUPLICATE})


class EvalStatus(enum.StrEnum):
    """An evaluation's outcome (``evaluations.status``)."""

    OK = "ok"
    ERROR = "error"


# The budget label of the evaluations the search trains with (``retrain-...`` labels are the long budgets).
PROXY = "proxy"
CHECK = "check"


@dataclass(frozen=True)
class Evaluation:
    """One stored evaluation of a candidate (``RunStore.evaluations`` as a typed record).

    ``seed_accuracies`` in seed order; ``degenerate``: the degeneracy flags, None when not analysed;
    ``error_message`` joined in from the errors table (None for an ok evaluation)."""

    id: int
    candidate_id: str
    budget: str
    split: str
    dataset: str | None
    status: str
    stage: str | None
    error_kind: str | None
    error_message: str | None
    accuracy: float | None
    loss: float | None
    params: int | None
    flops: float | None
    compile_s: float | None
    train_s: float | None
    wall_s: float | None
    structure_hash: str | None
    created: float
    seed_accuracies: tuple[float | None, ...] = ()
    degenerate: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == EvalStatus.OK

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        """From the dict ``RunStore.evaluations`` returns."""
        deg = d.get("degenerate")
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name not in ("seed_accuracies", "degenerate")},
                   seed_accuracies=tuple(d.get("seed_accuracies") or ()),
                   degenerate=None if deg is None else tuple(deg))

    def to_dict(self) -> dict[str, Any]:
        """The dict shape of ``RunStore.evaluations`` (lists for the sequences)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["seed_accuracies"] = list(self.seed_accuracies)
        d["degenerate"] = None if self.degenerate is None else list(self.degenerate)
        return d


@dataclass(frozen=True)
class StoredCandidate:
    """A candidate row as stored (``RunStore.candidates`` as a typed record); ``verdict`` is a ``Verdict``
    (None: not checked yet; corpus rows never are)."""

    id: str
    run_id: int | None
    cycle: int | None
    idx: int | None
    mode: str | None
    parent_id: str | None
    dataset: str | None
    source: str
    source_hash: str
    created: float
    prompt: str | None = None
    raw_text: str | None = None
    token_count: int | None = None
    finish_reason: str | None = None
    attempt: int = 0
    temperature: float | None = None
    verdict: Verdict | None = None
    error_kind: str | None = None
    error_message: str | None = None
    nearest_id: str | None = None
    similarity: float | None = None
    quality: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoredCandidate:
        v = d.get("verdict")
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name != "verdict"},
                   verdict=None if v is None else Verdict(v))


@dataclass(frozen=True)
class TrainedCandidate:
    """A generated candidate that trained: its row and its latest ok proxy evaluation."""

    candidate: StoredCandidate
    evaluation: Evaluation

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def quality(self) -> float:
        return self.candidate.quality  # type: ignore[return-value]  # set for every trained candidate

    @property
    def accuracy(self) -> float | None:
        return self.evaluation.accuracy

    @property
    def params(self) -> int | None:
        return self.evaluation.params


@dataclass(frozen=True)
class EliteSet:
    """The elite set S_t a cycle recorded: its cycle, the ids (best first), whether it reused S_{t-1}."""

    cycle: int
    ids: tuple[str, ...]
    reused: bool = False


@dataclass(frozen=True)
class References(MappingABC):
    """The reference accuracy per dataset: the median proxy accuracy of the seed corpus on it (DESIGN.md §6).

    A read-only mapping dataset -> accuracy. ``recorded``: read from the reference phase's record (cycle -1),
    which every phase after it uses; False: computed from the corpus's evaluations (before it is recorded)."""

    accuracies: tuple[tuple[str, float], ...] = ()
    recorded: bool = False

    def __getitem__(self, dataset: str) -> float:
        for ds, acc in self.accuracies:
            if ds == dataset:
                return acc
        raise KeyError(dataset)

    def __iter__(self) -> Iterator[str]:
        return iter(ds for ds, _ in self.accuracies)

    def __len__(self) -> int:
        return len(self.accuracies)
