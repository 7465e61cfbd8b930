"""Fault injection: a run killed (SIGKILL) right after any of its store writes resumes to exactly the
uninterrupted run: the same candidates with the same programs, verdicts and scores.

``CENAS_FAULT_KILL_AFTER_WRITE=N`` makes the process kill itself after its N-th committed write (store/runstore.py);
``CENAS_FAULT_TRACE=FILE`` lists a run's writes. The fast suite kills a small random-mutation run at a few
writes spread over its life (generation batches included); ``make test-all`` kills it at every write in
turn, and kills a run of the LLM generator (a tiny random Llama checkpoint with a character tokenizer,
generating in several batches per cycle) after every batch of generations it records, every CE update,
and at least once after each other kind of write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cenas_jax.store import RunStore

CONFIG = """
seed: 3
data: {name: digits}
train: {epochs: 0.5, batch_size: 64}
sandbox: {workers: 1, timeout_s: 120}
search:
  generator: mutation
  cycles: 2
  candidates_per_cycle: 4
  mode: mixed
  delta_share: 0.5
  elite_rho: 0.5
  warm_start: false
  corpus: [mlp_small, lenet5]
"""


def _cenas(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def _snapshot(run: Path) -> dict:
    """What a run decided: every candidate's program and verdict, every evaluation's outcome, the elites."""
    with RunStore(run, create=False) as s:
        cands = {r["id"]: (r["source"], r["raw_text"], r["token_count"], r["verdict"], r["error_kind"],
                           r["parent_id"], r["quality"]) for r in s.candidates()}  # fmt: skip
        evals = {(e["candidate_id"], e["budget"]): (e["status"], e["error_kind"], e["accuracy"])
                 for e in s.evaluations()}  # fmt: skip
        assert len(evals) == len(s.evaluations()), "an evaluation was recorded twice"
        run_id = s.get_run("main")["id"]
        elites = {c["cycle"]: tuple(c.get("elites") or ()) for c in s.cycles(run_id)}
        losses = s.finetune_losses(run_id)
    return {"candidates": cands, "evaluations": evals, "elites": elites, "losses": losses}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cfg = root / "cfg.yaml"
    cfg.write_text(CONFIG)
    run = root / "uninterrupted"
    p = _cenas(["run", str(cfg), "--run-dir", str(run), "--no-progress"], {"CENAS_FAULT_TRACE": str(root / "writes")})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    writes = len((root / "writes").read_text().splitlines())  # the run's store writes, counted as the hook does
    return cfg, _snapshot(run), writes


def _kill_and_resume(tmp_path: Path, cfg: Path, n: int, env: dict | None = None) -> dict | None:
    run = tmp_path / f"killed-at-{n}"
    p = _cenas(["run", str(cfg), "--run-dir", str(run), "--no-progress"],
               {**(env or {}), "CENAS_FAULT_KILL_AFTER_WRITE": str(n)})
    if p.returncode == 0:
        return None  # the run has fewer writes than n
    assert p.returncode == -9, p.stdout[-2000:] + p.stderr[-2000:]
    r = _cenas(["resume", str(run), "--no-progress"], env)
    assert r.returncode == 0, f"resume after a kill at write {n}: " + r.stdout[-2000:] + r.stderr[-2000:]
    return _snapshot(run)


@pytest.mark.slow
@pytest.mark.parametrize("n", [6, 9, 12, 20, 24, 30])
def test_more_kill_points(tmp_path, reference, n):
    cfg, want, _ = reference
    got = _kill_and_resume(tmp_path, cfg, n)
    assert got is not None and got == want


@pytest.mark.parametrize("n", [3, 16])  # 16: between a check's record and its verdict (a bug it found)
def test_a_run_killed_after_a_store_write_resumes_to_the_uninterrupted_run(tmp_path, reference, n):
    cfg, want, _ = reference
    got = _kill_and_resume(tmp_path, cfg, n)
    assert got is not None, f"the run ended before its write {n}"
    assert got == want


@pytest.mark.slow
@pytest.mark.timeout(7200)  # about 105 writes, a kill and a resume each: 45 min on 2 idle cores
def test_a_run_killed_after_any_store_write_resumes_to_the_uninterrupted_run(tmp_path, reference):
    cfg, want, writes = reference
    assert writes > 50
    first = int(os.environ.get("CENAS_FAULT_SWEEP_FROM", "1"))  # to finish a sweep cut short, by hand
    for n in range(first, writes + 1):
        got = _kill_and_resume(tmp_path, cfg, n)
        assert got is not None, f"the run ended before its write {n} of {writes}"
        assert got == want, f"killed after write {n}"
    assert _kill_and_resume(tmp_path, cfg, writes + 1) is None, "the run wrote more than its traced writes"


LLM_CONFIG = """
seed: 5
data: {name: digits}
train: {epochs: 0.3, batch_size: 64}
sandbox: {workers: 1, timeout_s: 120}
search:
  generator: llm
  cycles: 2
  candidates_per_cycle: 4
  mode: mixed
  delta_share: 0.5
  warm_start: false
  corpus: [mlp_small, lenet5]
  update_token_budget: 6000
llm:
  model: {name: CKPT, dtype: float32}
  sampling: {temperature: 1.0, max_new_tokens: 40, max_new_tokens_delta: 24, batch_size: 2}
  lora: {rank: 4, alpha: 8, layers: [-1]}
  finetune: {max_steps: 2, batch_size: 2, grad_accum: 1, max_seq_len: 4096, warmup_steps: 0}
"""


@pytest.fixture(scope="module")
def llm_reference(tmp_path_factory):
    pytest.importorskip("torch")
    from test_llm_model import _save_char_tokenizer, _save_tiny

    root = tmp_path_factory.mktemp("llm-faults")
    ckpt = root / "tiny-llama"
    _save_tiny(ckpt, "tied")
    conf = json.loads((ckpt / "config.json").read_text())
    conf["max_position_embeddings"] = 16384  # character tokens: a prompt with a program is a few thousand
    (ckpt / "config.json").write_text(json.dumps(conf))
    _save_char_tokenizer(ckpt)
    cfg = root / "cfg.yaml"
    cfg.write_text(LLM_CONFIG.replace("CKPT", str(ckpt)))
    env = {"CENAS_CACHE": str(root / "cache"), "CENAS_FAULT_TRACE": str(root / "writes")}
    run = root / "uninterrupted"
    p = _cenas(["run", str(cfg), "--run-dir", str(run), "--no-progress"], env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    writes = [line.split() for line in (root / "writes").read_text().splitlines()]
    env.pop("CENAS_FAULT_TRACE")
    return cfg, _snapshot(run), [(int(n), what) for n, what in writes], env


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_an_llm_run_killed_after_its_generation_batches_and_updates_resumes_to_the_uninterrupted_run(
        tmp_path, llm_reference):
    cfg, want, writes, env = llm_reference
    batches = [n for n, what in writes if what == "add_candidates"]
    assert len(batches) >= 4, "the run should record its generations in several batches per cycle"
    assert any(r[1] for r in want["candidates"].values()), "no raw generation recorded"
    assert len(want["losses"]) == 2, "two CE updates expected"
    first_of_kind = {}
    for n, what in writes:
        first_of_kind.setdefault(what, n)
    points = sorted(set(batches) | {n for n, what in writes if what == "add_finetune_losses"}
                    | {n + 1 for n, what in writes if what == "add_finetune_losses"} | set(first_of_kind.values()))
    for n in points:
        got = _kill_and_resume(tmp_path, cfg, n, env)
        assert got is not None, f"the run ended before its write {n}"
        assert got == want, f"killed after write {n} ({dict(writes)[n]})"
