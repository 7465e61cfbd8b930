"""A full disk is one clear error that says how much space the run needs; what was recorded stays intact, and
`cenas resume` continues once there is space. Tested on a small tmpfs (needs root to mount one)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cenas_jax.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
seed: 0
data: {name: digits}
train: {epochs: 0.5, batch_size: 64}
sandbox: {workers: 1, timeout_s: 120}
search:
  generator: mutation
  cycles: 2
  candidates_per_cycle: 4
  elite_rho: 0.5
  warm_start: false
  corpus: [mlp_small, lenet5]
"""


def _can_mount() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


@pytest.fixture
def small_disk(tmp_path):
    if not _can_mount():
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def cenas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)  # fmt: skip


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(tmp_path, small_disk):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    (small_disk / "filler").write_bytes(b"\0" * 700_000)
    run = small_disk / "run"
    p = cenas("run", str(cfg), "--run-dir", str(run), "--no-progress")
    out = p.stdout + p.stderr
    assert p.returncode == 2 and "Traceback" not in out, out[-3000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("cenas: error:")]
    assert "no space left" in line and "MiB free" in line and "the run directory holds" in line
    assert f"cenas resume {run}" in line
    # While the disk is full, reading still works and says the same in one line.
    listed = cenas("runs", str(small_disk))
    assert listed.returncode == 0 and "run " in listed.stdout and "Traceback" not in listed.stderr
    # What was recorded is intact, and the resume continues once there is space.
    with sqlite3.connect(run / "store.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    r = cenas("resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert RunDir(run).load_state().status == "finished"
    with sqlite3.connect(run / "store.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n, distinct = c.execute("SELECT count(*), count(DISTINCT candidate_id || '/' || budget) FROM evaluations").fetchone()
        assert n == distinct and n > 4
