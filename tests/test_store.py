import multiprocessing as mp
import os
import signal
import sqlite3

import pytest

from cenas_jax.errors import UserError
from cenas_jax.store import SCHEMA_VERSION, CandidateRow, RunStore, source_hash


def _ok(acc=0.5, seeds=(0.5,)):
    return {"status": "ok", "stage": "train", "accuracy": acc, "loss": 1.0, "params": 123, "flops": 1e4,
            "compile_s": 0.1, "train_s": 1.0, "wall_s": 1.2, "structure_hash": "abc", "seed_accuracies": list(seeds)}


def test_roundtrip(tmp_path):
    with RunStore(tmp_path / "run") as s:
        assert s.journal_mode == "wal"
        assert s.schema_version == SCHEMA_VERSION
        rid = s.create_run("r1", config={"seed": 1}, manifest={"jax": "x"})
        assert s.get_run("r1")["config"] == {"seed": 1}
        assert s.add_candidate(CandidateRow(id="c0", source="A", run_id=rid, cycle=0, idx=0, mode="full"))
        assert not s.add_candidate(CandidateRow(id="c0", source="B", run_id=rid))  # idempotent
        assert s.get_candidate("c0")["source"] == "A"
        assert s.get_candidate("c0")["source_hash"] == source_hash("A")
        s.add_evaluation("c0", _ok(0.6, (0.5, 0.7)))
        s.add_candidate(CandidateRow(id="c1", source="B", run_id=rid, cycle=0, idx=1))
        s.add_evaluation("c1", {"status": "error", "error_kind": "shape", "stage": "shape", "error_message": "got (2, 5)"})
        ev = s.evaluations(run_id=rid)
        assert [e["candidate_id"] for e in ev] == ["c0", "c1"]
        assert ev[0]["seed_accuracies"] == [0.5, 0.7]
        assert ev[1]["error_message"] == "got (2, 5)"
        assert s.error_counts(rid) == {"shape": 1}
        s.set_cycle(rid, 0, gamma=0.5)
        s.set_cycle(rid, 0, elites=["c0"])
        assert s.cycles(rid) == [{"cycle": 0, "gamma": 0.5, "elites": ["c0"]}]
    # reopen: everything is still there
    with RunStore(tmp_path / "run", create=False) as s:
        assert len(s.candidates(run_id=1, cycle=0)) == 2


def test_bad_records_are_refused_and_nothing_is_half_written(tmp_path):
    with RunStore(tmp_path) as s:
        s.add_candidate(CandidateRow(id="c0", source="A"))
        with pytest.raises(ValueError, match="error_kind"):
            s.add_evaluation("c0", {"status": "error"})
        with pytest.raises(ValueError, match="unknown candidate"):
            s.add_evaluation("zz", _ok())
        # a failure inside a transaction rolls back every statement of it
        with pytest.raises(RuntimeError):
            with s.transaction() as c:
                c.execute("INSERT INTO candidates(id, source, source_hash, created) VALUES ('c9','x','h',0)")
                raise RuntimeError("boom")
        assert s.get_candidate("c9") is None
        assert s.evaluations() == []


def test_duplicate_run_name(tmp_path):
    with RunStore(tmp_path) as s:
        s.create_run("a")
        with pytest.raises(UserError, match="already exists"):
            s.create_run("a")


def test_foreign_and_newer_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a cenas_jax run store"):
        RunStore(junk)
    other = tmp_path / "other.sqlite"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t(x)")
    c.commit()
    c.close()
    with pytest.raises(UserError, match="not a cenas_jax run store"):
        RunStore(other)
    newer = tmp_path / "newer"
    RunStore(newer).close()
    c = sqlite3.connect(newer / "store.sqlite")
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    c.commit()
    c.close()
    with pytest.raises(UserError, match="newer than this cenas_jax supports"):
        RunStore(newer)
    with pytest.raises(UserError, match="no run store"):
        RunStore(tmp_path / "missing", create=False)


def _writer(path, n_ready):
    s = RunStore(path)
    s.add_candidate(CandidateRow(id="c", source="A"))
    i = 0
    while True:
        s.add_evaluation("c", _ok(seeds=tuple(range(50))))
        i += 1
        if i == 20:
            n_ready.set()


def test_kill_never_leaves_half_a_record(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_writer, args=(tmp_path, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with RunStore(tmp_path) as s:
        evs = s.evaluations("c")
        assert len(evs) >= 20
        assert all(len(e["seed_accuracies"]) == 50 for e in evs)


def _make_v1_store(path):
    """A store exactly as schema version 1 wrote it (the evaluator's version)."""
    from cenas_jax.store import schema as st

    path.mkdir()
    c = sqlite3.connect(path / "store.sqlite")
    for stmt in st._statements(st.MIGRATIONS[0]):
        c.execute(stmt)
    c.execute(f"PRAGMA application_id = {st.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 1")
    c.execute("INSERT INTO candidates(id, source, source_hash, created) VALUES ('old', 'src', 'h', 0)")
    c.commit()
    c.close()


def test_migration_from_v1_keeps_rows_and_adds_loop_columns(tmp_path):
    _make_v1_store(tmp_path / "r")
    with RunStore(tmp_path / "r") as s:
        assert s.schema_version == SCHEMA_VERSION >= 2
        assert s.get_candidate("old")["source"] == "src"
        s.update_candidate("old", verdict="accepted", quality=0.9, nearest_id="x", similarity=0.3)
        d = s.get_candidate("old")
        assert (d["verdict"], d["quality"], d["attempt"]) == ("accepted", 0.9, 0)
        rid = s.create_run("r")
        s.add_finetune_losses(rid, 0, [3.0, 2.5])
        s.add_finetune_losses(rid, 0, [2.0])  # a redone update replaces the record
        assert s.finetune_losses(rid) == {0: [2.0]}
        s.add_timing(rid, 0, "generate", 1.5)
        s.add_timing(rid, 0, "generate", 0.5)
        assert s.timings(rid) == {0: {"generate": 2.0}}
        with pytest.raises(ValueError, match="cannot update"):
            s.update_candidate("old", source="evil")


def _open_many(path, n):
    for _ in range(n):
        RunStore(path).close()


def test_concurrent_first_opens_migrate_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open_many, args=(tmp_path / "r", 3)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    with RunStore(tmp_path / "r") as s:
        assert s.schema_version == SCHEMA_VERSION


def _make_v2_store(path):
    """A store exactly as schema version 2 wrote it, with one evaluation."""
    from cenas_jax.store import schema as st

    path.mkdir()
    c = sqlite3.connect(path / "store.sqlite")
    for script in st.MIGRATIONS[:2]:
        for stmt in st._statements(script):
            c.execute(stmt)
    c.execute(f"PRAGMA application_id = {st.APPLICATION_ID}")
    c.execute("PRAGMA user_version = 2")
    c.execute("INSERT INTO candidates(id, source, source_hash, created) VALUES ('old', 'src', 'h', 0)")
    c.execute("INSERT INTO evaluations(candidate_id, budget, status, accuracy, created) VALUES ('old', 'proxy', 'ok', 0.5, 0)")
    c.commit()
    c.close()


def test_migration_from_v2_adds_degeneracy_flags_unknown_for_old_rows(tmp_path):
    _make_v2_store(tmp_path / "r")
    with RunStore(tmp_path / "r") as s:
        assert s.schema_version == SCHEMA_VERSION == 3
        (old,) = s.evaluations("old")
        assert old["accuracy"] == 0.5 and old["degenerate"] is None  # not analysed, not "clean"
        s.add_evaluation("old", {"status": "ok", "accuracy": 0.6, "degenerate": ["linear: affine"]}, budget="proxy")
        s.add_evaluation("old", {"status": "ok", "accuracy": 0.7, "degenerate": []}, budget="proxy")
        assert [e["degenerate"] for e in s.evaluations("old")] == [None, ["linear: affine"], []]
