"""One owner per run directory (an OS file lock), and SIGTERM as a preemption: checkpoint, exit 75, resume.

Each owner is a real process: the lock is a kernel flock, released however its holder dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cenas_jax.errors import UserError
from cenas_jax.rundir import LoopState, RunDir, lock_holder, lock_run_dir
from cenas_jax.search.loop import EXIT_INTERRUPTED
from cenas_jax.store import RunStore

HOLD = """
import sys, time
from cenas_jax.rundir import lock_run_dir
lock_run_dir(sys.argv[1], "test holder")
print("HELD", flush=True)
time.sleep(600)
"""


def _hold(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_a_second_owner_is_refused_with_the_holders_pid_and_host(tmp_path):
    run = tmp_path / "run"
    proc = _hold(run)
    try:
        assert f"pid {proc.pid}" in lock_holder(run) and "test holder" in lock_holder(run)
        with pytest.raises(UserError) as e:
            lock_run_dir(run, "cenas resume")
        assert f"pid {proc.pid} on {os.uname().nodename}" in str(e.value) and "in use" in str(e.value)
    finally:
        proc.kill()  # kill -9: the kernel releases the lock, nothing is stale
        proc.wait()
    assert lock_holder(run) is None
    lock = lock_run_dir(run, "cenas resume")
    assert lock_run_dir(run, "again") is lock  # re-entrant within one process
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_readers_never_create_a_lock_or_a_directory(tmp_path):
    assert lock_holder(tmp_path / "nowhere") is None
    assert not (tmp_path / "nowhere").exists()


CONFIG = """
seed: 0
data: {name: digits}
train: {epochs: 0.5, batch_size: 64}
sandbox: {workers: 1, timeout_s: 120}
search:
  generator: mutation
  cycles: 3
  candidates_per_cycle: 4
  mode: mixed
  delta_share: 0.5
  elite_rho: 0.5
  warm_start: false
  corpus: [mlp_small, lenet5]
"""


def _cenas(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cenas_jax", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)  # fmt: skip


def test_run_and_resume_of_one_directory_exclude_each_other_and_sigterm_is_a_preemption(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    proc = _cenas("run", str(cfg), "--run-dir", str(run), "--no-progress", "--set", "search.preempt_grace_s=30")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # wait until it trains candidates of cycle 0
        if (run / "store.sqlite").exists():
            with RunStore(run, create=False) as s:
                if any(not e["candidate_id"].startswith("L-") for e in s.evaluations(budget="check")):
                    break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    # A second owner is refused at once, before anything loads, and nothing is changed.
    t0 = time.perf_counter()
    second = subprocess.run([sys.executable, "-m", "cenas_jax", "resume", str(run)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert second.returncode == 2 and f"in use by pid {proc.pid}" in second.stderr, second.stderr
    assert time.perf_counter() - t0 < 30
    forced = subprocess.run([sys.executable, "-m", "cenas_jax", "run", str(cfg), "--run-dir", str(run), "--force"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert forced.returncode == 2 and "in use" in forced.stderr, forced.stderr
    listed = subprocess.run([sys.executable, "-m", "cenas_jax", "runs", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert "running" in listed.stdout
    # SIGTERM: the work in flight finishes (or is abandoned after the grace), the run is checkpointed, exit 75.
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, out
    assert "SIGTERM" in out and f"resume with: cenas resume {run}" in out
    st = RunDir(run).load_state()
    assert st.status == "interrupted" and lock_holder(run) is None
    with RunStore(run, create=False) as s:
        before = {(e["candidate_id"], e["budget"]): e["id"] for e in s.evaluations()}
    done = subprocess.run([sys.executable, "-m", "cenas_jax", "resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert RunDir(run).load_state().status == "finished"
    with RunStore(run, create=False) as s:
        after = s.evaluations()
        keys = [(e["candidate_id"], e["budget"]) for e in after]
        assert len(keys) == len(set(keys)), "a candidate was evaluated twice"
        ids = {(e["candidate_id"], e["budget"]): e["id"] for e in after}
        assert all(ids[k] == v for k, v in before.items()), "a recorded evaluation changed"


@pytest.mark.slow
def test_sigterm_with_no_grace_abandons_the_work_in_flight_and_the_run_resumes(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    proc = _cenas("run", str(cfg), "--run-dir", str(run), "--no-progress", "--set", "search.preempt_grace_s=0")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (run / "store.sqlite").exists():
        time.sleep(0.1)
    time.sleep(1.0)  # inside the reference phase: the corpus is training
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, out
    assert "abandoned" in out
    assert RunDir(run).load_state().status == "interrupted"
    done = subprocess.run([sys.executable, "-m", "cenas_jax", "resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_run_killed_while_running_is_listed_and_replaceable_as_interrupted(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    run = tmp_path / "killed"
    from cenas_jax.config import load_config

    RunDir(run).create(load_config(cfg, []), {})
    RunDir(run).save_state(LoopState(cycle=1, phase="train", status="running"))  # as kill -9 leaves it
    listed = subprocess.run([sys.executable, "-m", "cenas_jax", "runs", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("killed "))
    assert "interrupted" in line and "running" not in line
    from cenas_jax.search import preflight

    assert preflight.check_new_run_dir(RunDir(run), force=True) == "interrupted"
