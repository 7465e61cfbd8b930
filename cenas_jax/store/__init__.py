"""The run store: one SQLite database (WAL) per run directory.

- ``schema``: the tables of each schema version, ``MIGRATIONS`` from one to the next, ``SCHEMA_VERSION``.
- ``rows``: what goes in and comes out: ``CandidateRow``, the read dataclasses, ``Verdict``, ``EvalStatus``, the
  budget labels ``PROXY`` / ``CHECK``.
- ``runstore``: ``RunStore``, the connection, the transactional writes and the named queries.

The phases ask their questions through named queries that return frozen dataclasses, each question defined
once in ``RunStore``: ``latest_evaluation(s)`` (a candidate's latest ok evaluation for a budget),
``trained_candidates``, ``cycle_elites`` / ``elites_before``, ``reference_accuracies`` / ``corpus_reference``.
Verdicts and evaluation statuses are ``StrEnum``s stored as their readable strings.

Every public write is one transaction, so a kill leaves either the whole record or
none of it. The schema is versioned (``PRAGMA user_version``); ``MIGRATIONS`` takes
an older store forward, and a store from a newer version is refused with a clear error.
Callers import the names below from ``cenas_jax.store``.
"""

from __future__ import annotations

from cenas_jax.store.rows import (
    CHECK,
    PROXY,
    VALID_VERDICTS,
    CandidateRow,
    EliteSet,
    EvalStatus,
    Evaluation,
    References,
    StoredCandidate,
    TrainedCandidate,
    Verdict,
    source_hash,
)
from cenas_jax.store.runstore import RunStore
from cenas_jax.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_FILENAME,
    UPDATABLE_CANDIDATE_FIELDS,
)

__all__ = [
    "APPLICATION_ID",
    "CHECK",
    "MIGRATIONS",
    "PROXY",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "UPDATABLE_CANDIDATE_FIELDS",
    "VALID_VERDICTS",
    "CandidateRow",
    "EliteSet",
    "EvalStatus",
    "Evaluation",
    "References",
    "RunStore",
    "StoredCandidate",
    "TrainedCandidate",
    "Verdict",
    "source_hash",
]
