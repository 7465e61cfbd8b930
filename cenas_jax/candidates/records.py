"""What goes into the sandbox and what comes out: ``Candidate``, ``EvalRecord``, and the worker's answer made a record.

A worker's messages are untrusted input (DESIGN.md §3): after its first
candidate nothing in a worker is trusted, so every value it reports is checked
here before it becomes an ``EvalRecord``. An "ok" result with impossible numbers
(non-finite, outside [0, 1]) is a protocol violation, recorded as a ``crash``;
an unknown error kind becomes ``crash``, an unknown stage None; texts are
clipped to ``worker.MAX_MESSAGE_CHARS``, lists to a few entries. Nothing here
raises on a hostile value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cenas_jax.candidates.errors import ALL_KINDS
from cenas_jax.candidates.worker import MAX_MESSAGE_CHARS

STAGES = ("syntax", "policy", "build", "shape", "budget", "train")
CHEAP_STAGES = STAGES[:-1]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One architecture to evaluate: an id chosen by the caller, its source, optionally another dataset.

    ``seeds`` (None: ``train.seeds``) and ``seed_offset`` choose which training seeds it trains: seeds
    ``seed_offset .. seed_offset + seeds - 1`` of the candidate, each the seed a task of every seed would
    train under that number (proxy-SNR's seed groups: DESIGN.md §7).
    """

    id: str
    source: str
    dataset: str | None = None  # None: the Evaluator's data_cfg.name
    seed_offset: int = 0
    seeds: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed_offset, bool) or not isinstance(self.seed_offset, int) or self.seed_offset < 0:
            raise ValueError(f"Candidate.seed_offset must be an int >= 0, got {self.seed_offset!r}")
        if self.seeds is not None and (isinstance(self.seeds, bool) or not isinstance(self.seeds, int)
                                       or self.seeds < 1):  # fmt: skip
            raise ValueError(f"Candidate.seeds must be None or an int >= 1, got {self.seeds!r}")


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """The outcome of one candidate; a failure is a record, never an exception.

    ``accuracy`` is the mean validation accuracy over seeds in [0, 1];
    ``loss`` the final mean training loss (nats); ``params`` the parameter
    count; ``flops`` per example (XLA cost analysis); ``compile_s``,
    ``train_s`` as measured by the trainer and ``wall_s`` from dispatch to
    record (seconds); ``stage`` the last stage reached.
    """

    candidate_id: str
    status: str  # "ok" | "error"
    error_kind: str | None = None  # an ErrorKind value
    error_message: str | None = None
    stage: str | None = None
    accuracy: float | None = None
    seed_accuracies: tuple[float, ...] = ()
    loss: float | None = None
    params: int | None = None
    flops: float | None = None
    compile_s: float | None = None
    train_s: float | None = None
    wall_s: float | None = None
    structure_hash: str | None = None
    dataset: str | None = None
    # Degeneracy flags from the jaxpr ("linear: ...", "constant: ...", "dead_params: ..."); None: not analysed.
    degenerate: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seed_accuracies"] = list(self.seed_accuracies)
        d["degenerate"] = None if self.degenerate is None else list(self.degenerate)
        return d


def clip_text(v: Any) -> str | None:
    """A worker's text as a string of at most ``MAX_MESSAGE_CHARS`` (and " ..."); None stays None."""
    if v is None:
        return None
    s = str(v)
    return s if len(s) <= MAX_MESSAGE_CHARS else s[:MAX_MESSAGE_CHARS] + " ..."


def _num(v: Any, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    if math.isnan(v):
        return v
    return min(max(v, lo), hi)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _implausible(msg: dict) -> str | None:
    """Why the numbers of an "ok" result cannot be true (non-finite, out of range), or None."""
    for field, lo, hi in (("accuracy", 0.0, 1.0), ("loss", -math.inf, math.inf)):
        v = msg.get(field)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
                                  and math.isfinite(v)):  # fmt: skip
            return f"{field} {clip_text(repr(v))[:40]} is not a finite number in [{lo}, {hi}]"
    seeds = msg.get("seed_accuracies")
    if isinstance(seeds, list) and any(not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0) for a in seeds):
        return "a seed accuracy outside [0, 1]"
    return None


def _flags(v: Any) -> tuple[str, ...] | None:
    """Degeneracy flags from a worker: a short list of short strings, or None."""
    if not isinstance(v, list):
        return None
    return tuple(clip_text(x)[:300] for x in v[:8] if isinstance(x, str))


def record_from_worker(cid: str, msg: dict, wall_s: float, dataset: str) -> EvalRecord:
    """The record of candidate ``cid`` from a worker's "result" message ``msg``, every value checked."""
    why = _implausible(msg) if msg.get("status") == "ok" else None
    if why is not None:  # numbers are checked before they reach the store
        return EvalRecord(cid, "error", "crash", f"protocol violation: {why}", None, wall_s=wall_s, dataset=dataset)
    status = msg.get("status") if msg.get("status") in ("ok", "error") else "error"
    kind = msg.get("error_kind")
    if status == "error" and kind not in ALL_KINDS:
        kind = "crash"
    if status == "ok":
        kind = None
    seeds = msg.get("seed_accuracies") or []
    if not isinstance(seeds, list):
        seeds = []
    seeds = tuple(a for a in (_num(x, 0.0, 1.0) for x in seeds[:1024]) if a is not None)
    stage = msg.get("stage") if msg.get("stage") in STAGES else None
    h = msg.get("structure_hash")
    return EvalRecord(
        candidate_id=cid,
        status=status,
        error_kind=kind,
        error_message=clip_text(msg.get("error_message")) if status == "error" else None,
        stage=stage,
        accuracy=_num(msg.get("accuracy"), 0.0, 1.0),
        seed_accuracies=seeds,
        loss=_num(msg.get("loss")),
        params=_int(msg.get("params")),
        flops=_num(msg.get("flops"), 0.0),
        compile_s=_num(msg.get("compile_s"), 0.0),
        train_s=_num(msg.get("train_s"), 0.0),
        wall_s=wall_s,
        structure_hash=h if isinstance(h, str) and len(h) <= 64 else None,
        dataset=dataset,
        degenerate=_flags(msg.get("degenerate")),
    )


def record_from_json(cid: str, value: Any, wall_s: float, dataset: str) -> EvalRecord:
    """The record of candidate ``cid`` from an ``EvalRecord.to_dict()`` that crossed a process boundary as JSON
    (a Ray actor's: ``ray_pool.py``), checked like a worker's message; its ``wall_s`` when it is a plausible
    number, else the caller's. Anything but an object is a ``crash`` record."""
    if not isinstance(value, dict):
        return EvalRecord(cid, "error", "crash", f"protocol violation: a record that is not an object "
                                                 f"({clip_text(type(value).__name__)})", None, wall_s=wall_s,
                          dataset=dataset)  # fmt: skip
    theirs = _num(value.get("wall_s"), 0.0)
    return record_from_worker(cid, value, theirs if theirs is not None and math.isfinite(theirs) else wall_s, dataset)


def voided(rec: EvalRecord, why: str) -> EvalRecord:
    """``rec`` made a ``crash`` without a score: its worker broke the protocol after answering."""
    return dataclasses.replace(rec, status="error", error_kind="crash", error_message=clip_text(f"protocol violation: {why}"),
                               accuracy=None, seed_accuracies=(), loss=None)  # fmt: skip
