"""What a newcomer meets at the command line: refusals that need no model come before the model loads,
a stored config can be fixed on resume, --force replaces a run after saying what it removes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cenas_jax.config import load_config
from cenas_jax.rundir import LoopState, RunDir

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "configs" / "quickstart.yaml"
# A run that needs no LLM and trains little: the random-mutation generator, one corpus program, one candidate.
TINY = ["search.generator=mutation", "search.corpus=[mlp_small]", "search.cycles=1", "search.candidates_per_cycle=1",
        "train.epochs=0.2", "sandbox.workers=0"]


def cenas(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
    return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0


def fake_run(path: Path, status: str, cycle: int = 0, phase: str = "reference", overrides=()) -> RunDir:
    """A run directory as `cenas run` leaves it, in a given state, without running anything."""
    rd = RunDir(path)
    rd.create(load_config(QUICKSTART, list(overrides)), {"config": {}})
    rd.save_state(LoopState(cycle=cycle, phase=phase, status=status))
    return rd


def test_dataset_typo_fails_before_the_model_loads_and_leaves_nothing(tmp_path):
    rc, out, secs = cenas("run", str(QUICKSTART), "--set", "data.name=digitz", "--run-dir", str(tmp_path / "r"))
    assert rc == 2
    assert "data.name" in out and "unknown dataset 'digitz'" in out
    assert "loading the LLM" not in out
    assert not (tmp_path / "r").exists()  # no failed run left behind to trap the directory


def test_missing_extra_dataset_names_its_key(tmp_path):
    rc, out, _ = cenas("run", str(QUICKSTART), "--set", "search.datasets=[cifar10]", "--data-dir", str(tmp_path),
                       "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "search.datasets" in out and "cifar10" in out
    assert "loading the LLM" not in out


def test_occupied_run_dir_is_refused_before_the_model_loads_with_both_ways_out(tmp_path):
    fake_run(tmp_path / "r", "finished", cycle=3, phase="done")
    rc, out, _ = cenas("run", str(QUICKSTART), "--run-dir", str(tmp_path / "r"))
    assert rc == 2
    assert "already holds a finished run" in out and "cenas resume" in out and "--force" in out
    assert "loading the LLM" not in out


def test_force_refuses_a_running_run_and_keeps_it(tmp_path):
    """A live run holds the run directory's lock: --force never replaces it (a run marked running that
    nobody holds was killed, and is replaceable as interrupted: tests/test_runlock.py)."""
    rd = fake_run(tmp_path / "r", "running", cycle=1, phase="train")
    hold = "import sys, time\nfrom cenas_jax.rundir import lock_run_dir\n" \
           "lock_run_dir(sys.argv[1], 'cenas run')\nprint('HELD', flush=True)\ntime.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(rd.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        rc, out, _ = cenas("run", str(QUICKSTART), "--run-dir", str(rd.path), "--force")
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2 and f"in use by pid {holder.pid}" in out and "never replaces a live run" in out
    assert rd.config_path.is_file() and rd.load_state().status == "running"


def test_force_with_a_bad_config_removes_nothing(tmp_path):
    rd = fake_run(tmp_path / "r", "failed")
    rc, out, _ = cenas("run", str(QUICKSTART), "--run-dir", str(rd.path), "--force", "--set", "data.name=nope")
    assert rc == 2 and "unknown dataset 'nope'" in out
    assert rd.config_path.is_file() and rd.load_state().status == "failed"


def test_resume_of_a_finished_run_says_so_without_loading_the_model(tmp_path):
    rd = fake_run(tmp_path / "r", "finished", cycle=3, phase="done")
    rc, out, secs = cenas("resume", str(rd.path))
    assert rc == 0
    assert "already finished (3 cycles)" in out and f"cenas report {rd.path}" in out
    assert "loading the LLM" not in out


def test_resume_with_the_stored_typo_fails_fast_and_set_must_name_real_keys(tmp_path):
    rd = fake_run(tmp_path / "r", "failed", overrides=["data.name=digitz"])
    rc, out, _ = cenas("resume", str(rd.path))
    assert rc == 2 and "data.name" in out and "digitz" in out and "loading the LLM" not in out
    rc, out, _ = cenas("resume", str(rd.path), "--set", "data.nmae=digits")
    assert rc == 2 and "data.nmae" in out
    assert yaml.safe_load(rd.config_path.read_text())["data"]["name"] == "digitz"  # untouched


def test_resume_refuses_changing_what_recorded_results_depend_on(tmp_path):
    rd = fake_run(tmp_path / "r", "interrupted", cycle=1, phase="train")
    rc, out, _ = cenas("resume", str(rd.path), "--set", "data.name=mnist5k", "--set", "seed=3")
    assert rc == 2
    assert "cannot change data.name, seed on resume" in out and "--force" in out
    assert yaml.safe_load(rd.config_path.read_text())["data"]["name"] == "digits"


def test_resume_set_fixes_a_failed_run_and_records_the_change(tmp_path):
    rd = fake_run(tmp_path / "r", "failed", overrides=["data.name=digitz", *TINY])
    rc, out, _ = cenas("resume", str(rd.path), "--set", "data.name=digits", "--no-progress", timeout=600)
    assert rc == 0, out
    assert "config changed: data.name 'digitz' -> 'digits'" in out
    assert rd.load_state().status == "finished"
    assert yaml.safe_load(rd.config_path.read_text())["data"]["name"] == "digits"
    changes = json.loads(rd.manifest_path.read_text())["config_changes"]
    assert changes[-1]["changes"] == [{"key": "data.name", "old": "digitz", "new": "digits"}]
    # A finished run extended by --set search.cycles continues at the first cycle not run.
    rc, out, _ = cenas("resume", str(rd.path), "--set", "search.cycles=2", "--no-progress", timeout=600)
    assert rc == 0, out
    assert "resuming" in out and "at cycle 1, phase generate" in out
    st = rd.load_state()
    assert st.status == "finished" and st.cycle == 2


def test_force_replaces_a_finished_run_after_saying_what_it_removes(tmp_path):
    rd = fake_run(tmp_path / "r", "finished", cycle=3, phase="done")
    (rd.path / "report").mkdir()
    (rd.path / "notes.txt").write_text("mine")
    args = [a for kv in TINY for a in ("--set", kv)]
    rc, out, _ = cenas("run", str(QUICKSTART), "--run-dir", str(rd.path), "--force", "--no-progress", *args, timeout=600)
    assert rc == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("--force:"))
    assert "replacing the finished run" in line
    for name in ("config.yaml", "manifest.json", "state.json", "checkpoints/", "report/"):
        assert name in line
    assert (rd.path / "notes.txt").read_text() == "mine"  # not the run's: kept
    assert not (rd.path / "report").exists()
    assert load_config(rd.config_path).search.generator == "mutation"
    assert rd.load_state().status == "finished"


def test_llm_generate_bad_top_p_is_refused_before_the_model_loads():
    rc, out, secs = cenas("llm", "generate", "--prompt", "x", "--top-p", "2")
    assert rc == 2 and "--top-p must be in (0, 1], got 2.0" in out
    assert secs < 30  # loading the model alone takes 10-17 s on 2 cores


@pytest.mark.slow
def test_make_demo_twice_in_a_row(tmp_path):
    """The second `make demo` resumes the finished demo straight to its report instead of failing (~10 min)."""
    demo = tmp_path / "quickstart"
    env = {**os.environ, "DEMO_DIR": str(demo)}
    # -o: take the venv as installed (a pyproject newer than it must not rebuild it inside a test)
    first = subprocess.run(["make", "-C", str(ROOT), "-o", ".venv/.installed", "demo"], capture_output=True, text=True, timeout=3600, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert (demo / "report" / "report.md").is_file()
    (demo / "report" / "report.md").unlink()
    t0 = time.perf_counter()
    second = subprocess.run(["make", "-C", str(ROOT), "-o", ".venv/.installed", "demo"], capture_output=True, text=True, timeout=600, env=env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert "already holds the demo run; resuming it" in out and "already finished (3 cycles)" in out
    assert "loading the LLM" not in out
    assert (demo / "report" / "report.md").is_file()
    assert time.perf_counter() - t0 < 300  # the report only, no search


def test_export_has_the_source_and_the_corpus_quality_and_its_format_flags_mean_something(tmp_path):
    import csv

    from synthetic_run import make_run

    run = make_run(tmp_path / "r", cycles=1, per_cycle=4)
    rc, out, _ = cenas("export", str(run), "--out", str(tmp_path / "c.csv"))
    assert rc == 0 and "wrote 7 candidates" in out
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "c.csv"))}
    corpus = rows["L-digits-mlp_b"]
    assert corpus["mode"] == "corpus" and float(corpus["quality"]) == pytest.approx(0.7 / 0.7)  # NULL in the store
    assert corpus["source"].startswith("import flax.linen as nn") and "nn.tanh" in corpus["source"]
    rc, out, _ = cenas("export", str(run), "--jsonl", "--out", "-")
    assert rc == 0
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 7 and {ln["id"] for ln in lines} == set(rows)
    assert lines[0]["seed_accuracies"] == [0.6] and "wrote 7 candidates to standard output" in out
    rc, out, _ = cenas("export", str(run), "--csv", "--jsonl")
    assert rc == 2 and "not allowed with argument" in out


@pytest.mark.parametrize("command", ["runs", "export"])
def test_runs_and_export_have_help_descriptions(command):
    rc, out, _ = cenas(command, "--help")
    assert rc == 0
    body = out.split("\n\n")[1]  # the paragraph after the usage block
    assert not body.startswith(("positional", "options")) and len(body) > 60


def test_llm_generate_help_gives_an_example_that_works_and_its_time():
    rc, out, _ = cenas("llm", "generate", "--help")
    assert rc == 0
    assert 'cenas llm generate --prompt "Write a Python function relu(x) that returns max(x, 0)."' in out
    assert "about 20 s" in out and "--no-chat" in out


@pytest.mark.llm
@pytest.mark.slow
def test_llm_generate_readme_example_writes_the_function():
    """The README's example with the defaults (chat template, temperature 0.7, seed 0): measured 19 s on 2 cores."""
    rc, out, _ = cenas("llm", "generate", "--prompt", "Write a Python function relu(x) that returns max(x, 0).",
                       timeout=600)
    assert rc == 0 and "def relu(x):" in out and "max(x, 0)" in out


def test_pyproject_license_is_an_spdx_string_that_setuptools_accepts_without_warning():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"  # a table ({text = ...}) is deprecated by setuptools
    assert "setuptools>=77" in meta["build-system"]["requires"]


def test_the_readme_contract_example_builds_passes_the_shape_check_and_is_not_degenerate():
    import re

    from cenas_jax.candidates.contract import build_net, shape_check
    from cenas_jax.candidates.degenerate import degeneracy_flags
    from cenas_jax.candidates.policy import check_policy

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing your own `Net`", 1)[1]
    src = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert check_policy(src) == []
    built = build_net(src, 10)
    assert shape_check(built, (8, 8, 1), 10)[1] == (2, 10)
    assert degeneracy_flags(built, (8, 8, 1)) == []

