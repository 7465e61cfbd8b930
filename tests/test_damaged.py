"""Damaged or missing run files: one line that names the file and what still works, never a traceback,
never a store created by a command that only reads, never a resume on a damaged store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cenas_jax.config import load_config
from cenas_jax.rundir import LoopState, RunDir
from cenas_jax.store import CandidateRow, RunStore

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "configs" / "quickstart.yaml"


def cenas(*args: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)  # fmt: skip
    return p.returncode, p.stdout + p.stderr


def a_run(path: Path, n: int = 30) -> RunDir:
    """A finished run directory with a store of ``n`` candidates (nothing trained for real)."""
    rd = RunDir(path)
    rd.create(load_config(QUICKSTART, []), {})
    with RunStore(path) as s:
        run_id = s.create_run("main", {})
        s.add_candidates([CandidateRow(id=f"c{i}", source="x = 1\n" * 200 + f"# {i}", run_id=run_id, cycle=0, idx=i,
                                       mode="full", dataset="digits") for i in range(n)])  # fmt: skip
        s.set_run_status(run_id, "finished")
    rd.save_state(LoopState(cycle=3, phase="done", status="finished"))
    return rd


def _no_traceback(out: str) -> None:
    assert "Traceback" not in out, out[-3000:]


def test_binary_garbage_in_state_json(tmp_path):
    rd = a_run(tmp_path / "r")
    rd.state_path.write_bytes(os.urandom(300) + b"\xff\xfe")
    rc, out = cenas("resume", str(rd.path))
    _no_traceback(out)
    assert rc == 2 and "state.json is damaged" in out and '"phase": "generate"' in out
    rc, out = cenas("runs", str(tmp_path))
    _no_traceback(out)
    assert rc == 0 and "damaged" in out and "state.json" in out


def test_an_empty_store_is_an_error_and_no_reader_recreates_it(tmp_path):
    rd = a_run(tmp_path / "r")
    store = rd.path / "store.sqlite"
    for extra in rd.path.glob("store.sqlite-*"):
        extra.unlink()
    store.write_bytes(b"")
    for args in (("report", str(rd.path)), ("export", str(rd.path), "--out", "-"),
                 ("resume", str(rd.path), "--set", "search.cycles=5")):
        rc, out = cenas(*args)
        _no_traceback(out)
        assert rc == 2 and "store.sqlite is empty" in out, (args, out)
        assert store.stat().st_size == 0, f"`cenas {args[0]}` wrote to the empty store"
    rc, out = cenas("runs", str(tmp_path))
    assert rc == 0 and "damaged" in out and "empty" in out


def test_resume_runs_a_quick_check_before_writing_anything(tmp_path):
    rd = a_run(tmp_path / "r", n=400)
    store = rd.path / "store.sqlite"
    with RunStore(store) as s:
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(store.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page : 5 * page + 1500] = b"\x41" * 1500  # a damaged page in the middle of the table
    store.write_bytes(bytes(data))
    manifest = rd.manifest_path.read_bytes()
    rc, out = cenas("resume", str(rd.path), "--set", "search.cycles=5")
    _no_traceback(out)
    assert rc == 2 and "quick_check" in out and "nothing was written" in out
    assert rd.manifest_path.read_bytes() == manifest and rd.load_state().status == "finished"


def test_a_damaged_config_is_named(tmp_path):
    rd = a_run(tmp_path / "r")
    rd.config_path.write_bytes(b"\x00\x9f{{{ not yaml")
    rc, out = cenas("resume", str(rd.path))
    _no_traceback(out)
    assert rc == 2 and "config.yaml is damaged" in out


def test_a_damaged_manifest_is_never_overwritten_by_a_config_change(tmp_path):
    rd = a_run(tmp_path / "r")
    rd.save_state(LoopState(cycle=1, phase="generate", status="interrupted"))
    rd.manifest_path.write_bytes(b"\xff\x00 not json")
    rc, out = cenas("resume", str(rd.path), "--set", "search.cycles=5")
    _no_traceback(out)
    assert rc == 2 and "manifest.json is damaged" in out
    assert rd.manifest_path.read_bytes() == b"\xff\x00 not json"
