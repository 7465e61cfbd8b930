"""Smoke test of the whole system with the real embedded LLM: `cenas run` → `cenas report` / `runs` / `export`.

Tiny budget (one cycle, two candidates, 64 new tokens, two fine-tuning steps on the last
layer's adapters): it checks the plumbing between the real sampler, the real CE update,
the orbax checkpoints, the sandbox and the store, not the quality of the search.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cenas_jax.rundir import RunDir
from cenas_jax.store import RunStore

pytestmark = pytest.mark.llm

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "search.cycles=1", "search.candidates_per_cycle=2", "search.corpus=[mlp_small, lenet5]",
    "search.update_token_budget=3000",
    "llm.sampling.max_new_tokens=64", "llm.sampling.batch_size=2",
    "llm.lora.rank=4", "llm.lora.layers=[-1]",
    "llm.finetune.max_steps=2", "llm.finetune.batch_size=2", "llm.finetune.grad_accum=2", "llm.finetune.max_seq_len=1024",
    "train.epochs=0.2", "sandbox.workers=2", "sandbox.timeout_s=120",
]


def cenas(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "cenas_jax", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class SmokeRun:
    """The ``cenas run`` of ``smoke_run``: its process, its directory and the directory it is in (with the cache)."""

    run: subprocess.CompletedProcess
    run_dir: Path
    tmp_path: Path
    env: dict[str, str]

    def generations(self) -> list[dict]:
        with RunStore(self.run_dir, create=False) as s:
            return [r for r in s.candidates(run_id=1) if r["cycle"] == 0]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """One ``cenas run`` of the quickstart at the SMOKE budget, made once for the module's tests."""
    tmp_path = tmp_path_factory.mktemp("llm_run")
    env = {**os.environ, "CENAS_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    sets = [x for s in SMOKE for x in ("--set", s)]
    p = cenas("run", "experiments/configs/quickstart.yaml", *sets, "--run-dir", str(run), "--no-progress", env=env)
    return SmokeRun(run=p, run_dir=run, tmp_path=tmp_path, env=env)


def test_real_llm_run_finishes_and_says_so(smoke_run):
    p = smoke_run.run
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cycle 0 (of 0-0)" in p.stdout and "warm start: CE update on the corpus L" in p.stdout
    assert RunDir(smoke_run.run_dir).load_state().status == "finished"


def test_real_llm_run_manifest_names_the_model_versions_and_config(smoke_run):
    manifest = RunDir(smoke_run.run_dir).manifest()
    assert manifest["model_fingerprint"].startswith("SmolLM2-135M-Instruct")
    assert manifest["versions"]["jax"] and manifest["config"]["search"]["cycles"] == 1


def test_real_llm_generations_are_recorded_with_their_raw_answer_and_verdict(smoke_run):
    gens = smoke_run.generations()
    assert len(gens) >= 2
    assert all(r["raw_text"] is not None and r["token_count"] > 0 for r in gens)
    assert all(r["finish_reason"] in ("eos", "stop", "length", "repeat") for r in gens)
    assert all(r["raw_text"].startswith("```python\n" if r["mode"] == "full" else "<<<<<<< SEARCH\n") for r in gens)
    assert all(r["verdict"] in ("invalid", "valid", "accepted", "duplicate") for r in gens)


def test_real_llm_warm_start_and_update_losses_and_checkpoints(smoke_run):
    with RunStore(smoke_run.run_dir, create=False) as s:
        losses = s.finetune_losses(1)
    # warm start: 2 programs x 2 passes = 4 pairs, 2 steps of 2; cycle 0: elites (if any) + replay, 1-2 steps
    assert len(losses[-1]) == 2 and 1 <= len(losses[0]) <= 2
    rd = RunDir(smoke_run.run_dir)
    assert (rd.checkpoints / "warm" / "COMPLETE").exists() and (rd.checkpoints / "cycle_000" / "COMPLETE").exists()


def test_real_llm_warm_start_is_cached_with_its_measured_rate(smoke_run):
    cache = smoke_run.tmp_path / "cache" / "warmstart"
    cached = [d for d in cache.iterdir() if d.is_dir()]
    assert len(cached) == 1 and (cached[0] / "COMPLETE").exists()
    # the measured warm-start rate is kept beside the cached checkpoints, for the preflight estimate
    timings = json.loads((cache / "timings.json").read_text())
    assert all(v > 0 for v in timings.values()) and timings


def test_real_llm_run_report_has_the_per_cycle_table(smoke_run):
    run = smoke_run.run_dir
    p = cenas("report", str(run))
    assert p.returncode == 0, p.stderr
    text = (run / "report" / "report.md").read_text()
    assert "## Per cycle" in text and "| 0 |" in text


def test_real_llm_run_is_listed_as_finished(smoke_run):
    p = cenas("runs", str(smoke_run.tmp_path))
    assert p.returncode == 0 and "run" in p.stdout and "finished" in p.stdout


def test_real_llm_run_exports_every_generation_and_the_corpus(smoke_run):
    run = smoke_run.run_dir
    p = cenas("export", str(run), "--csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(run / "candidates.csv")))
    assert len(rows) == len(smoke_run.generations()) + 2  # the generations plus the two corpus programs


def test_real_llm_resuming_the_finished_run_is_a_no_op_that_says_so(smoke_run):
    # resuming a finished run is a no-op that says so
    p = cenas("resume", str(smoke_run.run_dir), env=smoke_run.env)
    assert p.returncode == 0 and "already finished" in p.stdout
