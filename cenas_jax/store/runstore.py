"""``RunStore``: the run store's connection, its transactional writes and its named read queries.

Every public write is one transaction, so a kill leaves either the whole record or
none of it. Opening checks the file is a cenas_jax store and migrates an older schema
forward (``schema.MIGRATIONS``); a store from a newer version is refused with a clear error.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.errors import UserError
from cenas_jax.store.rows import (
    PROXY,
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
from cenas_jax.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_FILENAME,
    UPDATABLE_CANDIDATE_FIELDS,
    _statements,
)


class RunStore:
    """A SQLite run store. Open with ``RunStore(path)``; ``path`` may be a run directory."""

    def __init__(self, path: str | Path, *, create: bool = True, migrate: bool = True) -> None:
        """Open (``create``: or create) the store at ``path`` (a run directory or the file).

        ``migrate=False`` (the live view): a store of an older schema is refused with a message instead of
        being upgraded, so the reader never writes to a store another process may be running on."""
        p = Path(path)
        if p.is_dir() or (not p.suffix and not p.exists()):
            p = p / STORE_FILENAME
        self.path = p
        if not p.exists():
            if not create:
                raise UserError(f"no run store at {p}")
            p.parent.mkdir(parents=True, exist_ok=True)
        elif not create and p.stat().st_size == 0:  # opening it would write a header: a reader never does
            raise UserError(f"{p} is empty (0 bytes): the run's records are lost; restore the file from a backup, "
                            f"or start the run again (`cenas run ... --force`)")
        try:
            self._conn = sqlite3.connect(str(p), timeout=30.0, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys = ON")
            # A reader that must not write (migrate=False) leaves the journal mode as it is (ours are WAL).
            mode = self._conn.execute("PRAGMA journal_mode" + (" = WAL" if migrate else "")).fetchone()[0]
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # One read transaction: another process may be creating the store right now, and the
            # tables, the application id and the version are committed together.
            self._conn.execute("BEGIN")
            has_tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise UserError(f"{p} is not a cenas_jax run store (SQLite said: {e})") from e
        self.journal_mode = mode
        if not create and not has_tables:
            self._conn.close()
            raise UserError(f"{p} holds no run store tables: damaged, or not written by cenas_jax")
        if has_tables and app_id != APPLICATION_ID:
            self._conn.close()
            raise UserError(f"{p} is an SQLite database but not a cenas_jax run store")
        if version > SCHEMA_VERSION:
            self._conn.close()
            raise UserError(
                f"{p} has store schema version {version}, newer than this cenas_jax supports "
                f"({SCHEMA_VERSION}); upgrade cenas_jax to read it"
            )
        if not migrate and version < SCHEMA_VERSION:
            self._conn.close()
            raise UserError(f"{p} has store schema version {version}, older than this cenas_jax's "
                            f"({SCHEMA_VERSION}); `cenas report {p.parent}` upgrades it (once no run writes to it)")
        self._migrate(version)

    # -- plumbing ---------------------------------------------------------

    def _migrate(self, version: int) -> None:
        for target in range(version, SCHEMA_VERSION):
            with self.transaction() as c:
                # Another process may have migrated between our read and this (write-locked) transaction.
                if c.execute("PRAGMA user_version").fetchone()[0] > target:
                    continue
                for stmt in _statements(MIGRATIONS[target]):
                    c.execute(stmt)
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.execute(f"PRAGMA user_version = {target + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One atomic write: everything inside commits together or not at all."""
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise _write_error(self.path, e) from None
        try:
            yield cur
        except BaseException as e:
            self._rollback(cur)
            if isinstance(e, sqlite3.OperationalError):
                raise _write_error(self.path, e) from None
            raise
        else:
            try:
                cur.execute("COMMIT")
            except sqlite3.OperationalError as e:  # e.g. disk full at commit time: nothing of it is kept
                self._rollback(cur)
                raise _write_error(self.path, e) from None
            _fault_point()

    @staticmethod
    def _rollback(cur: sqlite3.Cursor) -> None:
        try:
            cur.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # SQLite already rolled back (a full disk does that): nothing is half-written

    def quick_check(self) -> str | None:
        """SQLite's quick_check: None when the file is sound, else what it found (first lines)."""
        try:
            rows = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            return str(e)
        return None if rows == ["ok"] else "; ".join(rows[:3])

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs and cycles ----------------------------------------------------

    def create_run(self, name: str, config: Mapping[str, Any] | None = None, manifest: Mapping[str, Any] | None = None) -> int:
        """Create a run (its ``name`` must be new); returns its id."""
        with self.transaction() as c:
            try:
                c.execute(
                    "INSERT INTO runs(name, created, config_json, manifest_json) VALUES (?,?,?,?)",
                    (name, time.time(), json.dumps(config or {}, sort_keys=True), json.dumps(manifest or {}, sort_keys=True)),
                )
            except sqlite3.IntegrityError as e:
                raise UserError(f"a run named {name!r} already exists in {self.path}") from e
            return int(c.lastrowid)

    def get_run(self, name_or_id: str | int) -> dict[str, Any] | None:
        col = "id" if isinstance(name_or_id, int) else "name"
        row = self._conn.execute(f"SELECT * FROM runs WHERE {col} = ?", (name_or_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["config"] = json.loads(d.pop("config_json"))
        d["manifest"] = json.loads(d.pop("manifest_json"))
        return d

    def runs(self) -> list[dict[str, Any]]:
        return [self.get_run(int(r["id"])) for r in self._conn.execute("SELECT id FROM runs ORDER BY id")]  # type: ignore[misc]

    def set_run_status(self, run_id: int, status: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def set_cycle(self, run_id: int, cycle: int, **fields: Any) -> None:
        """Merge ``fields`` (JSON-able) into the record of ``cycle``."""
        with self.transaction() as c:
            row = c.execute("SELECT data_json FROM cycles WHERE run_id = ? AND cycle = ?", (run_id, cycle)).fetchone()
            data = json.loads(row[0]) if row else {}
            data.update(fields)
            c.execute(
                "INSERT OR REPLACE INTO cycles(run_id, cycle, data_json, updated) VALUES (?,?,?,?)",
                (run_id, cycle, json.dumps(data, sort_keys=True), time.time()),
            )

    def cycles(self, run_id: int) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT cycle, data_json FROM cycles WHERE run_id = ? ORDER BY cycle", (run_id,))
        return [{"cycle": r["cycle"], **json.loads(r["data_json"])} for r in rows]

    # -- candidates and evaluations -----------------------------------------

    def add_candidate(self, cand: CandidateRow) -> bool:
        """Insert a candidate; returns False (and changes nothing) when its id is already stored."""
        with self.transaction() as c:
            return self._insert_candidate(c, cand)

    def add_candidates(self, cands: Sequence[CandidateRow], invalid: Mapping[str, tuple[str, str]] | None = None) -> None:
        """Insert a batch of generations in one transaction (a kill leaves all of them or none), with the
        verdict ``invalid`` (error kind, message) of those that failed before any check (an edit that
        does not apply). Ids already stored are left as they are."""
        invalid = invalid or {}
        with self.transaction() as c:
            for cand in cands:
                if self._insert_candidate(c, cand) and cand.id in invalid:
                    kind, message = invalid[cand.id]
                    c.execute("UPDATE candidates SET verdict = ?, error_kind = ?, error_message = ? WHERE id = ?",
                              (Verdict.INVALID.value, kind, message, cand.id))  # fmt: skip

    @staticmethod
    def _insert_candidate(c: sqlite3.Cursor, cand: CandidateRow) -> bool:
        if c.execute("SELECT 1 FROM candidates WHERE id = ?", (cand.id,)).fetchone():
            return False
        c.execute(
            "INSERT INTO candidates(id, run_id, cycle, idx, mode, parent_id, dataset, source, source_hash, created,"
            " prompt, raw_text, token_count, finish_reason, attempt, temperature)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (cand.id, cand.run_id, cand.cycle, cand.idx, cand.mode, cand.parent_id, cand.dataset,
             cand.source, source_hash(cand.source), time.time(), cand.prompt, cand.raw_text,
             cand.token_count, cand.finish_reason, cand.attempt, cand.temperature),
        )
        return True

    def update_candidate(self, candidate_id: str, **fields: Any) -> None:
        """Set verdict-type fields of a stored candidate (see ``UPDATABLE_CANDIDATE_FIELDS``)."""
        bad = set(fields) - UPDATABLE_CANDIDATE_FIELDS
        if bad:
            raise ValueError(f"cannot update candidate field(s) {sorted(bad)}")
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        values = [v.value if isinstance(v, enum.Enum) else v for v in fields.values()]  # a Verdict as its string
        with self.transaction() as c:
            n = c.execute(f"UPDATE candidates SET {cols} WHERE id = ?", (*values, candidate_id)).rowcount
            if n != 1:
                raise ValueError(f"unknown candidate {candidate_id!r}")

    def add_finetune_losses(self, run_id: int, cycle: int, losses: Sequence[float]) -> None:
        """Record the per-step losses of a CE update (replacing any earlier record of that cycle)."""
        with self.transaction() as c:
            c.execute("DELETE FROM finetune_steps WHERE run_id = ? AND cycle = ?", (run_id, cycle))
            c.executemany(
                "INSERT INTO finetune_steps(run_id, cycle, step, loss) VALUES (?,?,?,?)",
                [(run_id, cycle, i, _num(x)) for i, x in enumerate(losses)],
            )

    def finetune_losses(self, run_id: int) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for r in self._conn.execute("SELECT cycle, loss FROM finetune_steps WHERE run_id = ? ORDER BY cycle, step", (run_id,)):
            out.setdefault(r[0], []).append(r[1])
        return out

    def add_timing(self, run_id: int, cycle: int, phase: str, seconds: float) -> None:
        """Record (or accumulate into) the wall time of one phase of a cycle."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO timings(run_id, cycle, phase, seconds) VALUES (?,?,?,?)"
                " ON CONFLICT(run_id, cycle, phase) DO UPDATE SET seconds = seconds + excluded.seconds",
                (run_id, cycle, phase, float(seconds)),
            )

    def timings(self, run_id: int) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for r in self._conn.execute("SELECT cycle, phase, seconds FROM timings WHERE run_id = ? ORDER BY cycle", (run_id,)):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out

    def get_candidate(self, candidate_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        return dict(row) if row else None

    def candidates(self, run_id: int | None = None, cycle: int | None = None) -> list[dict[str, Any]]:
        cond, args = _filters(("run_id", run_id), ("cycle", cycle))
        q = f"SELECT * FROM candidates WHERE 1=1{cond} ORDER BY cycle, idx, created"
        return [dict(r) for r in self._conn.execute(q, args)]

    def add_evaluation(
        self,
        candidate_id: str,
        record: Mapping[str, Any],
        *,
        budget: str = "proxy",
        split: str = "val",
        dataset: str | None = None,
    ) -> int:
        """Store one evaluation record (an ``EvalRecord.to_dict()``-shaped mapping) with its seeds and error.

        Keys read: status, stage, error_kind, error_message, accuracy, loss, params, flops,
        compile_s, train_s, wall_s, structure_hash, seed_accuracies. Returns the evaluation id.
        """
        status = record.get("status")
        if status not in (EvalStatus.OK, EvalStatus.ERROR):
            raise ValueError(f"evaluation record for {candidate_id}: status must be 'ok' or 'error', got {status!r}")
        if status == EvalStatus.ERROR and not record.get("error_kind"):
            raise ValueError(f"evaluation record for {candidate_id}: an error record needs an error_kind")
        with self.transaction() as c:
            if not c.execute("SELECT 1 FROM candidates WHERE id = ?", (candidate_id,)).fetchone():
                raise ValueError(f"unknown candidate {candidate_id!r}: add_candidate first")
            c.execute(
                "INSERT INTO evaluations(candidate_id, budget, split, dataset, status, stage, error_kind, accuracy, loss,"
                " params, flops, compile_s, train_s, wall_s, structure_hash, degenerate_json, created)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    candidate_id, budget, split, dataset, status, record.get("stage"), record.get("error_kind"),
                    _num(record.get("accuracy")), _num(record.get("loss")), record.get("params"),
                    _num(record.get("flops")), _num(record.get("compile_s")), _num(record.get("train_s")),
                    _num(record.get("wall_s")), record.get("structure_hash"),
                    None if record.get("degenerate") is None else json.dumps(list(record["degenerate"])), time.time(),
                ),
            )
            eval_id = int(c.lastrowid)
            for seed, acc in enumerate(record.get("seed_accuracies") or ()):
                c.execute("INSERT INTO seed_scores(evaluation_id, seed, accuracy) VALUES (?,?,?)", (eval_id, seed, _num(acc)))
            if status == EvalStatus.ERROR:
                c.execute(
                    "INSERT INTO errors(evaluation_id, candidate_id, kind, stage, message) VALUES (?,?,?,?,?)",
                    (eval_id, candidate_id, record["error_kind"], record.get("stage"), record.get("error_message")),
                )
            return eval_id

    def evaluations(self, candidate_id: str | None = None, *, budget: str | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        """Evaluations (with ``seed_accuracies`` and ``error_message`` joined in), oldest first."""
        cond, args = _filters(("e.candidate_id", candidate_id), ("e.budget", budget), ("c.run_id", run_id))
        return self._evaluation_rows(cond, args)

    def _evaluation_rows(self, cond: str, args: Sequence[Any], *, newest_first: bool = False,
                         limit: int | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT e.*, er.message AS error_message FROM evaluations e"
            " LEFT JOIN errors er ON er.evaluation_id = e.id"
            " LEFT JOIN candidates c ON c.id = e.candidate_id WHERE 1=1"
        )
        q += cond + " ORDER BY e.id" + (" DESC" if newest_first else "") + (f" LIMIT {int(limit)}" if limit else "")
        out = []
        for r in self._conn.execute(q, list(args)).fetchall():
            d = dict(r)
            seeds = self._conn.execute(
                "SELECT accuracy FROM seed_scores WHERE evaluation_id = ? ORDER BY seed", (d["id"],)
            ).fetchall()
            d["seed_accuracies"] = [s[0] for s in seeds]
            raw = d.pop("degenerate_json", None)
            d["degenerate"] = json.loads(raw) if raw is not None else None
            out.append(d)
        return out

    # -- the phases' questions, each answered here once --------------------------------------------------------

    def latest_evaluation(self, candidate_id: str, budget: str = PROXY, *, ok: bool = True,
                          split: str | None = None) -> Evaluation | None:
        """A candidate's latest evaluation for ``budget`` (``ok``: the latest *successful* one; else the latest
        whatever its status), optionally of one ``split``; None when there is none. "Latest" is the last
        stored (the highest evaluation id)."""
        cond, args = _filters(("e.candidate_id", candidate_id), ("e.budget", budget), ("e.split", split),
                              ("e.status", EvalStatus.OK.value if ok else None))
        rows = self._evaluation_rows(cond, args, newest_first=True, limit=1)
        return Evaluation.from_dict(rows[0]) if rows else None

    def latest_evaluations(self, run_id: int | None, budget: str = PROXY, *, ok: bool = True) -> dict[str, Evaluation]:
        """``latest_evaluation`` of every candidate of a run that has one (``run_id`` None: of every candidate in
        the store, whatever its run), by candidate id (in the order of each candidate's first evaluation of the
        kind)."""
        cond, args = _filters(("c.run_id", run_id), ("e.budget", budget), ("e.status", EvalStatus.OK.value if ok else None))
        out: dict[str, Evaluation] = {}
        for d in self._evaluation_rows(cond, args):
            out[d["candidate_id"]] = Evaluation.from_dict(d)
        return out

    def trained_candidates(self, run_id: int, cycle: int | None = None) -> list[TrainedCandidate]:
        """The generated candidates (cycle >= 0; ``cycle``: of that cycle only) that trained: those with a
        quality Q and a successful proxy evaluation (the latest one rides along), in store order (cycle,
        slot, creation). The loop sets Q from the latest proxy evaluation only when it succeeded, so these
        are exactly the candidates with a Q."""
        out = []
        for d in self.candidates(run_id=run_id, cycle=cycle):
            if d["cycle"] is None or d["cycle"] < 0 or d["quality"] is None:
                continue
            ev = self.latest_evaluation(d["id"], PROXY)
            if ev is not None:
                out.append(TrainedCandidate(StoredCandidate.from_dict(d), ev))
        return out

    def cycle_elites(self, run_id: int, cycle: int) -> EliteSet | None:
        """The elite set cycle ``cycle``'s select phase recorded (possibly empty), None before it ran."""
        row = self._conn.execute("SELECT data_json FROM cycles WHERE run_id = ? AND cycle = ?", (run_id, cycle)).fetchone()
        data = json.loads(row[0]) if row else {}
        if "elites" not in data:
            return None
        return EliteSet(cycle=cycle, ids=tuple(data["elites"] or ()), reused=bool(data.get("elites_reused", False)))

    def elites_before(self, run_id: int, cycle: int) -> EliteSet | None:
        """The latest non-empty elite set of a search cycle before ``cycle``: S_{t-1} for t = ``cycle``, or
        the one before it when that cycle selected none; None when no cycle has selected any (then the parents
        are the corpus's best, ``loop._anchors``). Only cycles 0 <= s < ``cycle`` count: cycle -1's record is
        the reference phase's (the corpus on each dataset, the warm start), which selects no elites."""
        rows = self._conn.execute(
            "SELECT cycle, data_json FROM cycles WHERE run_id = ? AND cycle >= 0 AND cycle < ? ORDER BY cycle DESC",
            (run_id, cycle))
        for r in rows:
            data = json.loads(r["data_json"])
            if data.get("elites"):
                return EliteSet(cycle=r["cycle"], ids=tuple(data["elites"]), reused=bool(data.get("elites_reused", False)))
        return None

    def reference_accuracies(self, run_id: int) -> References:
        """The reference accuracy per dataset as the reference phase recorded it (cycle -1's ``reference``),
        which Q is normalised by; empty (``recorded`` False) before the phase recorded it."""
        row = self._conn.execute("SELECT data_json FROM cycles WHERE run_id = ? AND cycle = -1", (run_id,)).fetchone()
        data = json.loads(row[0]) if row else {}
        if "reference" not in data:
            return References()
        return References(tuple((str(k), float(v)) for k, v in (data["reference"] or {}).items()), recorded=True)

    def corpus_reference(self, run_id: int) -> References:
        """The reference accuracy per dataset computed from the store: the median over the corpus rows
        (cycle -1) of each one's latest successful proxy accuracy. What the reference phase records."""
        accs: dict[str, list[float]] = {}
        for d in self.candidates(run_id=run_id, cycle=-1):
            ev = self.latest_evaluation(d["id"], PROXY)
            if ev is not None:
                accs.setdefault(d["dataset"], []).append(ev.accuracy)  # type: ignore[arg-type]
        return References(tuple((ds, float(np.median(v))) for ds, v in accs.items()))

    def error_counts(self, run_id: int | None = None) -> dict[str, int]:
        q = "SELECT er.kind, count(*) FROM errors er LEFT JOIN candidates c ON c.id = er.candidate_id"
        args: list[Any] = []
        if run_id is not None:
            q += " WHERE c.run_id = ?"
            args.append(run_id)
        q += " GROUP BY er.kind ORDER BY er.kind"
        return {k: n for k, n in self._conn.execute(q, args)}


def _write_error(path: Path, e: sqlite3.OperationalError) -> Exception:
    """A failed store write as the error a person can act on (a full disk: how much is free)."""
    text = str(e)
    if "disk is full" in text or "database or disk is full" in text:
        return OSError(28, f"no space left to write the run store ({text})", str(path))
    return UserError(f"could not write to the run store {path}: {text}; what was recorded before is intact")


# Fault injection for the crash-safety tests: with CENAS_FAULT_KILL_AFTER_WRITE=N the process SIGKILLs
# itself right after its N-th committed store write (tests/test_faults.py kills a run at every write in turn);
# with CENAS_FAULT_TRACE=FILE it appends one line per committed write: its number and the RunStore method.
_FAULT_AT = int(os.environ.get("CENAS_FAULT_KILL_AFTER_WRITE", "0") or 0)
_FAULT_TRACE = os.environ.get("CENAS_FAULT_TRACE") or None
_writes = 0


def _fault_point() -> None:
    global _writes
    if _FAULT_AT > 0 or _FAULT_TRACE:
        _writes += 1
        if _FAULT_TRACE:
            f = sys._getframe(1)
            while f is not None and (f.f_code.co_filename != __file__ or f.f_code.co_name in ("transaction", "_fault_point")):
                f = f.f_back
            with open(_FAULT_TRACE, "a") as out:
                out.write(f"{_writes} {f.f_code.co_name if f is not None else '?'}\n")
        if 0 < _FAULT_AT <= _writes:
            os.kill(os.getpid(), signal.SIGKILL)


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` AND col = ?`` for each (column, value) whose value is not None, and the arguments."""
    used = [(col, v) for col, v in pairs if v is not None]
    return "".join(f" AND {col} = ?" for col, _ in used), [v for _, v in used]


def _num(x: Any) -> float | None:
    if x is None:
        return None
    return float(x)
