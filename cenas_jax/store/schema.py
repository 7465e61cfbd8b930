"""The run store's SQLite schema: the tables of each version, the migrations between them, and the markers
(``APPLICATION_ID``, ``PRAGMA user_version`` = ``SCHEMA_VERSION``) by which ``RunStore`` recognises a store.

Tables (schema version 1, the evaluator's; version 2 adds the loop's columns and tables; version 3 the
evaluations' degeneracy flags):
- ``runs``: one row per run (name, created, status, config and manifest as JSON).
- ``cycles``: per-cycle facts of a run (a JSON bag of fields the loop records).
- ``candidates``: every program seen (source, hash, parent, mode, cycle, index, dataset).
- ``evaluations``: one row per evaluation of a candidate (status, error kind, accuracy
  as the mean over seeds, loss, params, FLOPs, timings, structure hash, budget, split).
- ``seed_scores``: the per-seed accuracies of an evaluation.
- ``errors``: the error of a failed evaluation (kind from the fixed taxonomy, stage, message).
"""

from __future__ import annotations

from collections.abc import Sequence

STORE_FILENAME = "store.sqlite"
APPLICATION_ID = 0x43454E41  # "CENA": marks a file as a cenas_jax store

_SCHEMA_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'created',
    config_json TEXT NOT NULL DEFAULT '{}',
    manifest_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE cycles (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cycle INTEGER NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, cycle)
);
CREATE TABLE candidates (
    id TEXT PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    cycle INTEGER,
    idx INTEGER,
    mode TEXT,
    parent_id TEXT,
    dataset TEXT,
    source TEXT NOT NULL,
    source_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX candidates_run_cycle ON candidates(run_id, cycle, idx);
CREATE INDEX candidates_hash ON candidates(source_hash);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    candidate_id TEXT NOT NULL REFERENCES candidates(id),
    budget TEXT NOT NULL DEFAULT 'proxy',
    split TEXT NOT NULL DEFAULT 'val',
    dataset TEXT,
    status TEXT NOT NULL,
    stage TEXT,
    error_kind TEXT,
    accuracy REAL,
    loss REAL,
    params INTEGER,
    flops REAL,
    compile_s REAL,
    train_s REAL,
    wall_s REAL,
    structure_hash TEXT,
    created REAL NOT NULL
);
CREATE INDEX evaluations_candidate ON evaluations(candidate_id);
CREATE TABLE seed_scores (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
    seed INTEGER NOT NULL,
    accuracy REAL,
    PRIMARY KEY (evaluation_id, seed)
);
CREATE TABLE errors (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
    candidate_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    message TEXT
);
CREATE INDEX errors_kind ON errors(kind);
"""

# Version 2 (the search loop's): a candidate row is one LLM generation, with its raw text,
# prompt, token count, finish reason, sampling attempt and temperature, the verdict of the
# cheap checks and the novelty filter (with the nearest neighbour and its similarity), and
# its normalised quality; plus fine-tuning losses and per-phase timings.
_SCHEMA_V2 = """
ALTER TABLE candidates ADD COLUMN prompt TEXT;
ALTER TABLE candidates ADD COLUMN raw_text TEXT;
ALTER TABLE candidates ADD COLUMN token_count INTEGER;
ALTER TABLE candidates ADD COLUMN finish_reason TEXT;
ALTER TABLE candidates ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE candidates ADD COLUMN temperature REAL;
ALTER TABLE candidates ADD COLUMN verdict TEXT;
ALTER TABLE candidates ADD COLUMN error_kind TEXT;
ALTER TABLE candidates ADD COLUMN error_message TEXT;
ALTER TABLE candidates ADD COLUMN nearest_id TEXT;
ALTER TABLE candidates ADD COLUMN similarity REAL;
ALTER TABLE candidates ADD COLUMN quality REAL;
CREATE TABLE finetune_steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cycle INTEGER NOT NULL,
    step INTEGER NOT NULL,
    loss REAL,
    PRIMARY KEY (run_id, cycle, step)
);
CREATE TABLE timings (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    cycle INTEGER NOT NULL,
    phase TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (run_id, cycle, phase)
);
"""

# Version 3: the degeneracy flags of an evaluation (JSON list of "code: explanation"; NULL: not analysed).
_SCHEMA_V3 = """
ALTER TABLE evaluations ADD COLUMN degenerate_json TEXT;
"""

# Migration i takes a store from version i to version i + 1 (MIGRATIONS[0] creates v1).
MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3]
SCHEMA_VERSION = len(MIGRATIONS)


# Columns a caller may set after insertion (verdicts arrive after the cheap checks, quality after training).
UPDATABLE_CANDIDATE_FIELDS = frozenset({"verdict", "error_kind", "error_message", "nearest_id", "similarity", "quality"})


def _statements(script: str) -> Sequence[str]:
    """Split a schema script into statements (the schema has no semicolons inside strings)."""
    return [s.strip() for s in script.split(";") if s.strip()]
