"""The CE loop end to end with the real sandbox and a scripted generator (a test double for the LLM).

The scripted generator replays fixed completions, so these tests check the loop's own
logic: slots, delta application, cheap checks, novelty resampling, training, elites,
CE-update examples, the store, resume after a crash and after kill -9, determinism.
The real LLM runs the loop in tests/test_loop_llm.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.config import load_config
from cenas_jax.errors import UserError
from cenas_jax.rundir import LoopState, RunDir
from cenas_jax.search.generator import ScriptedGenerator
from cenas_jax.search.loop import SearchLoop
from cenas_jax.search.mutation import MutationGenerator
from cenas_jax.store import RunStore

MLP = """import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense({w})(x)
        x = nn.{act}(x)
{extra}        return nn.Dense(self.num_classes)(x)
"""


def mlp(w: int, act: str = "relu", extra: str = "") -> str:
    return MLP.format(w=w, act=act, extra=extra)


@dataclass(frozen=True)
class Entry:
    name: str
    source: str


CORPUS = [
    Entry("mlp_a", mlp(64)),
    Entry("mlp_b", mlp(32, "tanh", "        x = nn.Dense(32)(x)\n        x = nn.relu(x)\n")),
    Entry("mlp_c", mlp(48, "gelu")),
]

NOVEL = [
    mlp(128, "relu", "        x = nn.Dense(96)(x)\n        x = nn.gelu(x)\n        x = nn.Dense(40)(x)\n        x = nn.relu(x)\n"),
    mlp(80, "swish", "        x = nn.LayerNorm()(x)\n        x = nn.Dense(72)(x)\n        x = nn.tanh(x)\n        x = nn.Dense(24)(x)\n"),
    mlp(20, "elu", "        x = nn.Dropout(0.1, deterministic=not train)(x)\n        x = nn.Dense(60)(x)\n        x = nn.sigmoid(x)\n"),
    mlp(100, "leaky_relu", "        y = nn.Dense(100)(x)\n        x = x + nn.relu(y)\n        x = nn.Dense(50)(x)\n"),
]


def fence(src: str) -> str:
    return f"Here is a better network:\n```python\n{src}```\nIt should train well."


EDIT = "```\n<<<<<<< SEARCH\n        return nn.Dense(self.num_classes)(x)\n=======\n        x = nn.Dense(56)(x)\n        x = nn.relu(x)\n        x = nn.Dense(56)(x)\n        x = nn.silu(x)\n        return nn.Dense(self.num_classes)(x)\n>>>>>>> REPLACE\n```"
BAD_EDIT = "<<<<<<< SEARCH\n        x = nn.Conv(17)(x)\n=======\n        x = nn.Conv(18)(x)\n>>>>>>> REPLACE"
GARBAGE = "```python\nclass Net(nn.Module:\n    pass\n```"

CONFIG = """
seed: 0
data: {name: digits}
train: {epochs: 0.5, batch_size: 64, learning_rate: 0.05}
sandbox: {workers: 2, timeout_s: 120}
search:
  cycles: 2
  candidates_per_cycle: 4
  mode: mixed
  delta_share: 0.5
  elite_rho: 0.5
  novelty: {max_resamples: 1}
"""


def _cfg(tmp_path: Path, extra: list[str] = ()):
    p = tmp_path / "cfg.yaml"
    p.write_text(CONFIG)
    return load_config(p, list(extra))


def _completions():
    # Cycle 0 slots: 0,1 delta; 2,3 full. Slot 3's first answer copies a corpus program (rejected,
    # resampled). Cycle 1: a bad edit (delta_apply), a good edit, garbage (syntax), a novel program
    # without its import line (completed by the loop).
    return [EDIT, EDIT, fence(NOVEL[0]), fence(CORPUS[0].source), fence(NOVEL[1]),
            BAD_EDIT, EDIT, GARBAGE, fence(NOVEL[2].replace("import flax.linen as nn\n", "")), fence(NOVEL[3])]


@pytest.fixture(scope="module")
def evaluator():
    cfg = load_config(None, ["train.epochs=0.5", "sandbox.workers=2", "sandbox.timeout_s=120"])
    with Evaluator(cfg.data, cfg.train, cfg.sandbox) as ev:
        yield ev


def _open(run_dir, cfg, gen, ev, **kw):
    return SearchLoop.open(run_dir, cfg, gen, ev, CORPUS, progress=False, echo=lambda s: None, **kw)


# ---------------------------------------------------------------- one run end to end, checked by the tests below


@dataclass
class EndToEnd:
    """The run of ``end_to_end``: what it printed and returned, its generator, its directory."""

    cfg: Any
    gen: ScriptedGenerator
    lines: list[str]
    summaries: list[Any]
    rd: RunDir

    def store(self) -> RunStore:
        return RunStore(self.rd.path, create=False)

    def rows(self) -> dict[str, dict]:
        with self.store() as s:
            return {r["id"]: r for r in s.candidates(run_id=1)}

    def cycle_lines(self) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("cycle ") and "generated" in ln]


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory, evaluator) -> EndToEnd:
    """Two cycles of 4 slots over ``_completions()`` (see there what each answer tests), run once for the module."""
    tmp_path = tmp_path_factory.mktemp("end_to_end")
    cfg = _cfg(tmp_path, ["llm.sampling.temperature_delta=0.2", "search.warm_start_passes=2",
                          "search.warm_start_learning_rate=0.01"])
    gen = ScriptedGenerator(_completions())
    lines: list[str] = []
    loop = SearchLoop.open(tmp_path / "run", cfg, gen, evaluator, CORPUS, progress=False, echo=lines.append)
    summaries = loop.run()
    loop.close()
    return EndToEnd(cfg=cfg, gen=gen, lines=lines, summaries=summaries, rd=RunDir(tmp_path / "run"))


def test_end_to_end_runs_every_cycle_and_finishes(end_to_end):
    assert [s.cycle for s in end_to_end.summaries] == [0, 1]
    assert end_to_end.rd.load_state().status == "finished"


def test_end_to_end_console_numbers_cycles_from_0_and_says_which_best_q(end_to_end):
    # The console numbers cycles from 0, as the report and the ids do; "best Q" says which best it is.
    summaries, cycle_lines = end_to_end.summaries, end_to_end.cycle_lines()
    assert [ln.split("  ")[0] for ln in cycle_lines] == ["cycle 0 (of 0-1)", "cycle 1 (of 0-1)"]
    so_far = max(q for s in summaries for q in [s.best_quality] if q is not None)
    assert summaries[1].best_so_far == pytest.approx(so_far) and f"best Q so far {so_far:.3f}" in cycle_lines[1]
    assert f"cycle best Q {summaries[1].best_quality:.3f}" in cycle_lines[1]
    for sm, ln in zip(summaries, cycle_lines):
        assert f"accepted {sm.accepted}  trained {sm.trained}" in ln and sm.trained <= sm.accepted


def test_end_to_end_warm_start_says_it_happens_once_and_how_long_it_takes(end_to_end):
    # The warm start says it happens once and how long it should take, then how long it took.
    warm = [ln for ln in end_to_end.lines if ln.startswith("warm start:")]
    assert "done once" in warm[0] and "expected about" in warm[0] and warm[1].startswith("warm start: done in ")


def test_end_to_end_corpus_rows_are_trained_and_carry_their_own_quality(end_to_end):
    rows = end_to_end.rows()
    with end_to_end.store() as s:
        corpus_rows = [r for r in rows.values() if r["cycle"] == -1]
        assert len(corpus_rows) == 3 and all(s.evaluations(r["id"], budget="proxy")[0]["status"] == "ok" for r in corpus_rows)
        # the corpus rows carry their own Q (accuracy / the median corpus accuracy): the lineage's root
        ref = {c["cycle"]: c for c in s.cycles(1)}[-1]["reference"]["digits"]
        for r in corpus_rows:
            assert r["quality"] == pytest.approx(s.evaluations(r["id"], budget="proxy")[0]["accuracy"] / ref)


def test_end_to_end_a_missing_import_line_is_added_and_the_raw_answer_kept(end_to_end):
    # one novel program forgot its import: the loop added it (candidates/repair.py), the raw answer is kept
    rows = end_to_end.rows()
    c1_3 = next(r for r in rows.values() if r["cycle"] == 1 and r["idx"] == 3 and r["attempt"] == 0)
    assert "import flax" not in c1_3["raw_text"] and c1_3["verdict"] == "accepted"
    assert c1_3["source"].startswith("import flax.linen as nn\n")
    c1 = {r["idx"]: r for r in rows.values() if r["cycle"] == 1}
    assert c1[3]["verdict"] == "accepted" and c1[3]["quality"] is not None


def test_end_to_end_delta_slots_edit_a_corpus_parent_and_a_novel_full_program_is_accepted(end_to_end):
    c0 = {(r["idx"], r["attempt"]): r for r in end_to_end.rows().values() if r["cycle"] == 0}
    # the two delta slots apply the same edit to (possibly different) parents
    assert c0[(0, 0)]["mode"] == "delta" and c0[(0, 0)]["parent_id"].startswith("L-digits-")
    assert c0[(2, 0)]["verdict"] == "accepted"


def test_end_to_end_a_copy_of_a_corpus_program_is_rejected_then_resampled_hotter(end_to_end):
    c0 = {(r["idx"], r["attempt"]): r for r in end_to_end.rows().values() if r["cycle"] == 0}
    # slot 3 copied a corpus program: rejected with its nearest neighbour, then resampled
    assert c0[(3, 0)]["verdict"] == "duplicate" and c0[(3, 0)]["similarity"] >= 0.85
    assert c0[(3, 0)]["nearest_id"] == "L-digits-mlp_a"
    assert c0[(3, 1)]["verdict"] == "accepted" and c0[(3, 1)]["temperature"] > c0[(3, 0)]["temperature"]


def test_end_to_end_delta_answers_sample_at_temperature_delta(end_to_end):
    c0 = {(r["idx"], r["attempt"]): r for r in end_to_end.rows().values() if r["cycle"] == 0}
    # per-mode temperatures: delta answers sample at sampling.temperature_delta
    assert c0[(0, 0)]["temperature"] == pytest.approx(0.2) and c0[(1, 0)]["temperature"] == pytest.approx(0.2)
    assert c0[(2, 0)]["temperature"] == pytest.approx(end_to_end.cfg.llm.sampling.temperature)


def test_end_to_end_invalid_generations_carry_their_error_kind(end_to_end):
    c1 = {r["idx"]: r for r in end_to_end.rows().values() if r["cycle"] == 1}
    assert c1[0]["verdict"] == "invalid" and c1[0]["error_kind"] == "delta_apply"
    assert c1[2]["verdict"] == "invalid" and c1[2]["error_kind"] == "syntax"


def test_end_to_end_each_accepted_program_trained_once_each_generation_checked_once(end_to_end):
    with end_to_end.store() as s:
        for r in s.candidates(run_id=1):
            n_proxy = len(s.evaluations(r["id"], budget="proxy"))
            assert n_proxy == (1 if r["verdict"] == "accepted" or r["cycle"] == -1 else 0), r["id"]
            if r["cycle"] >= 0 and r["error_kind"] != "delta_apply":
                assert len(s.evaluations(r["id"], budget="check")) == 1


def test_end_to_end_each_cycle_records_gamma_and_elites_that_reach_it(end_to_end):
    rows = end_to_end.rows()
    with end_to_end.store() as s:
        cycles = {c["cycle"]: c for c in s.cycles(1)}
    for t in (0, 1):
        assert cycles[t]["gamma"] is not None and cycles[t]["elites"]
        qs = [r["quality"] for r in rows.values() if r["cycle"] == t and r["quality"] is not None]
        assert all(rows[e]["quality"] >= cycles[t]["gamma"] for e in cycles[t]["elites"])
        assert len(cycles[t]["elites"]) <= len(qs)


def test_end_to_end_store_holds_the_updates_losses_and_the_phases_timings(end_to_end):
    with end_to_end.store() as s:
        assert s.finetune_losses(1).keys() == {-1, 0, 1}
        assert set(s.timings(1)[0]) == {"generate", "sample", "train", "select", "update"}
        # The reference phase (corpus training and warm start) is timed too, for the throughput end to end.
        assert set(s.timings(1)[-1]) == {"reference"} and s.timings(1)[-1]["reference"] > 0


def test_end_to_end_warm_start_then_one_ce_update_per_cycle_each_checkpointed(end_to_end):
    gen = end_to_end.gen
    # warm start + one CE update per cycle, each on elites + replayed corpus programs
    assert len(gen.updates) == 3 and all(n > 0 for n in gen.updates)
    # the warm start's own passes and rate; the cycles' updates use the fine-tuning config's
    assert gen.update_settings == [(2, 0.01), (None, None), (None, None)]
    assert (end_to_end.rd.checkpoints / "cycle_001" / "COMPLETE").exists()


def test_end_to_end_delta_prompts_show_the_parents_code(end_to_end):
    assert any("nn.Dense(" in p for p in end_to_end.gen.prompts_seen)


# ---------------------------------------------------------------- crashes, kills, stops and resumes


class Crash(Exception):
    pass


class CrashingGenerator(ScriptedGenerator):
    """Raises on the n-th generate call: a crash in the middle of a cycle."""

    crash_at: int = 10**9

    def generate(self, prompts, temperatures, seeds, **kw):
        self.crash_at -= 1
        if self.crash_at < 0:
            raise Crash("simulated crash")
        return super().generate(prompts, temperatures, seeds, **kw)


def test_resume_after_crash_loses_and_repeats_nothing(tmp_path, evaluator):
    cfg = _cfg(tmp_path)
    gen = CrashingGenerator(_completions())
    gen.crash_at = 2  # cycle 0 takes two calls (one resample); the third call, cycle 1, crashes
    loop = _open(tmp_path / "run", cfg, gen, evaluator)
    with pytest.raises(Crash):
        loop.run()
    loop.close()
    rd = RunDir(tmp_path / "run")
    st = rd.load_state()
    assert (st.cycle, st.phase, st.status) == (1, "generate", "failed")
    with RunStore(rd.path) as s:
        before = {e["id"] for e in s.evaluations(run_id=1)}
    gen2 = ScriptedGenerator(_completions(), cursor=5)
    loop = _open(tmp_path / "run", None, gen2, evaluator)
    loop.run()
    loop.close()
    assert rd.load_state().status == "finished"
    # the adapters were restored from cycle 0's checkpoint (warm start + cycle 0), then cycle 1's update ran
    assert len(gen2.updates) == 3 and gen2.cursor == 9
    with RunStore(rd.path) as s:
        evs = s.evaluations(run_id=1)
        assert before <= {e["id"] for e in evs}
        per = {}
        for e in evs:
            per[(e["candidate_id"], e["budget"])] = per.get((e["candidate_id"], e["budget"]), 0) + 1
        assert max(per.values()) == 1


@pytest.mark.slow
def test_same_seed_same_generations_and_elites(tmp_path, evaluator):
    outs = []
    for k in range(2):
        cfg = _cfg(tmp_path)
        loop = _open(tmp_path / f"run{k}", cfg, ScriptedGenerator(_completions()), evaluator)
        loop.run()
        loop.close()
        with RunStore(tmp_path / f"run{k}") as s:
            rows = [(r["id"], r["source"], r["parent_id"], r["verdict"]) for r in s.candidates(run_id=1)]
            elites = [c.get("elites") for c in s.cycles(1)]
        outs.append((rows, elites))
    assert outs[0] == outs[1]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_loop import CORPUS, ScriptedGenerator, _completions, SearchLoop, Evaluator, load_config
    cfg = load_config({cfg!r})
    class Slow(ScriptedGenerator):
        def update(self, examples, seed, epochs=None, learning_rate=None):
            print("UPDATE", flush=True)
            return super().update(examples, seed, epochs, learning_rate)
    ev = Evaluator(cfg.data, cfg.train, cfg.sandbox)
    loop = SearchLoop.open({run!r}, cfg, Slow(_completions()), ev, CORPUS, progress=False, echo=lambda s: print(s, flush=True))
    loop.run()
    """
)


def test_kill_9_mid_cycle_then_resume(tmp_path, evaluator):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(CONFIG)
    run = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), cfg=str(cfg_path), run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    # Kill as soon as cycle 0's training has recorded at least one evaluation.
    deadline = time.time() + 240
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        if (run / "store.sqlite").exists():
            with RunStore(run) as s:
                n = sum(1 for e in s.evaluations(budget="proxy") if not e["candidate_id"].startswith("L-"))
            if n >= 1:
                killed_in = RunDir(run).load_state()
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.2)
    proc.wait(30)
    assert killed_in is not None, "the run finished or stalled before it could be killed"
    with RunStore(run) as s:
        before = {(e["candidate_id"], e["budget"]): e["id"] for e in s.evaluations()}
    loop = _open(run, None, ScriptedGenerator(_completions(), cursor=5), evaluator)
    loop.run()
    loop.close()
    assert RunDir(run).load_state().status == "finished"
    with RunStore(run) as s:
        after = s.evaluations()
        keys = [(e["candidate_id"], e["budget"]) for e in after]
        assert len(keys) == len(set(keys)), "a candidate was evaluated twice"
        assert all(before[k] == {(e["candidate_id"], e["budget"]): e["id"] for e in after}[k] for k in before)
        assert sum(1 for e in after if e["budget"] == "proxy" and not e["candidate_id"].startswith("L-")) >= 4


def test_ctrl_c_checkpoints_and_exits_cleanly_then_resumes(tmp_path, evaluator):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(CONFIG)
    run = tmp_path / "run"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), cfg=str(cfg_path), run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    sent = False
    while time.time() < deadline and proc.poll() is None:
        if (run / "store.sqlite").exists():
            with RunStore(run) as s:
                n = sum(1 for e in s.evaluations(budget="proxy") if not e["candidate_id"].startswith("L-"))
            if n >= 1:
                proc.send_signal(signal.SIGINT)
                sent = True
                break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=240)
    assert sent, out
    assert proc.returncode == 0, out
    assert "resume with: cenas resume" in out
    st = RunDir(run).load_state()
    assert st.status == "interrupted" and st.cycle == 0
    loop = _open(run, None, ScriptedGenerator(_completions(), cursor=5), evaluator)
    loop.run()
    loop.close()
    assert RunDir(run).load_state().status == "finished"
    with RunStore(run) as s:
        keys = [(e["candidate_id"], e["budget"]) for e in s.evaluations()]
        assert len(keys) == len(set(keys))


def test_warm_start_estimate_uses_this_machines_last_measurement(tmp_path):
    from cenas_jax.search.ce_update import WARM_START_S_PER_PAIR_PASS, record_warm_start_time, warm_start_estimate

    est, basis = warm_start_estimate(tmp_path, "m:1", 108)
    assert est == pytest.approx(108 * WARM_START_S_PER_PAIR_PASS) and "estimate" in basis
    record_warm_start_time(tmp_path, "m:1", 100, 250.0)
    est, basis = warm_start_estimate(tmp_path, "m:1", 108)
    assert est == pytest.approx(270.0) and "measured on this machine" in basis
    assert warm_start_estimate(tmp_path, "other:2", 10)[0] == pytest.approx(10 * WARM_START_S_PER_PAIR_PASS)
    (tmp_path / "timings.json").write_text("{not json")
    assert warm_start_estimate(tmp_path, "m:1", 1)[0] == pytest.approx(WARM_START_S_PER_PAIR_PASS)


def test_a_missing_or_incomplete_adapter_checkpoint_is_an_error_or_its_update_is_redone(tmp_path, evaluator):
    cfg = _cfg(tmp_path)
    loop = _open(tmp_path / "run", cfg, ScriptedGenerator(_completions()), evaluator)
    loop.run()
    loop.close()
    rd = RunDir(tmp_path / "run")
    # As a kill in the middle of cycle 1's update, after cycle 0's checkpoint lost its marker, would leave it.
    (rd.checkpoints / "cycle_000" / "COMPLETE").unlink()
    rd.save_state(LoopState(cycle=1, phase="update", status="interrupted"))
    gen = ScriptedGenerator(_completions(), cursor=10)
    with pytest.raises(UserError) as e:
        _open(rd.path, None, gen, evaluator).run()
    assert "cycle_000" in str(e.value) and "--redo-update" in str(e.value) and "from warm" in str(e.value)
    assert rd.load_state().status == "interrupted" and gen.updates == []  # nothing written, nothing restored
    loop = _open(rd.path, None, gen, evaluator, redo_update=True)
    loop.run()
    loop.close()
    assert rd.load_state().status == "finished"
    assert len(gen.update_settings) == 2  # cycle 0's update redone from the warm start, then cycle 1's
    assert (rd.checkpoints / "cycle_000" / "COMPLETE").exists()
    # Both the checkpoint and the one before it gone: no silent fallback, even with --redo-update.
    for name in ("cycle_000", "cycle_001"):
        (rd.checkpoints / name / "COMPLETE").unlink()
    rd.save_state(LoopState(cycle=2, phase="generate", status="interrupted"))
    with pytest.raises(UserError) as e:
        _open(rd.path, None, ScriptedGenerator(_completions()), evaluator, redo_update=True).run()
    assert "cannot continue" in str(e.value)


def test_a_damaged_generator_state_is_named_not_a_traceback(tmp_path, evaluator):
    cfg = _cfg(tmp_path, ["search.cycles=1"])
    loop = _open(tmp_path / "run", cfg, ScriptedGenerator(_completions()), evaluator)
    loop.run()
    loop.close()
    rd = RunDir(tmp_path / "run")
    (rd.checkpoints / "cycle_000" / "scripted.json").write_bytes(b"\x00garbage")
    rd.save_state(LoopState(cycle=1, phase="generate", status="interrupted"))
    with pytest.raises(UserError) as e:
        _open(rd.path, None, ScriptedGenerator(_completions()), evaluator).run()
    assert "cycle_000 is damaged" in str(e.value) and "--redo-update" in str(e.value)


_SENT: list[float] = []  # when each Ctrl-C of these tests was sent


def _ctrl_c_in(seconds: float) -> None:
    def send() -> None:
        _SENT.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Timer(seconds, send).start()


def _busy(seconds: float) -> None:
    """Long work in flight, as a sampling batch or a CE update on a CPU is (Python keeps taking signals)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)


@dataclass
class SlowBatch(MutationGenerator):
    """Random mutation whose ``slow_batch``-th batch would take a minute; Ctrl-C arrives 0.3 s into it."""

    slow_batch: int = 0
    batches: int = 0

    def generate(self, prompts, temperatures, seeds, *, skip=(), on_batch=None):
        def hooked(ks, gs):
            self.batches += 1
            if self.batches == self.slow_batch:
                _ctrl_c_in(0.3)
                _busy(60)
            on_batch(ks, gs)

        return super().generate(prompts, temperatures, seeds, skip=skip, on_batch=hooked)


@dataclass
class SlowUpdate(MutationGenerator):
    """Random mutation whose ``slow_update``-th CE update would take a minute; Ctrl-C arrives 0.3 s into it."""

    slow_update: int = 0
    updates: int = 0

    def update(self, examples, seed, epochs=None, learning_rate=None):
        self.updates += 1
        if self.updates == self.slow_update:
            _ctrl_c_in(0.3)
            _busy(60)
        return super().update(examples, seed, epochs, learning_rate)


@dataclass
class SlowEvaluations:
    """The real evaluator, but the second record of its ``slow_call``-th call would take a minute (a long
    proxy training in flight); Ctrl-C arrives 0.3 s into it."""

    inner: Evaluator
    slow_call: int
    calls: int = 0

    def evaluate_iter(self, cands, train):
        self.calls += 1
        for k, rec in enumerate(self.inner.evaluate_iter(cands, train=train)):
            if self.calls == self.slow_call and k == 1:
                _ctrl_c_in(0.3)
                _busy(60)
            yield rec


def _generations(run: Path) -> list[tuple]:
    with RunStore(run) as s:
        return [(r["id"], r["source"], r["raw_text"], r["verdict"], r["quality"]) for r in s.candidates(run_id=1)]


def _interrupted_then_resumed(tmp_path, evaluator, cfg, gen) -> tuple[float, LoopState]:
    loop = _open(tmp_path / "cut", cfg, gen, evaluator)
    _SENT.clear()
    loop.run()
    took = time.monotonic() - _SENT[0]  # from Ctrl-C to the run's return, checkpointed
    loop.close()
    assert loop.stopped_by_signal
    st = RunDir(tmp_path / "cut").load_state()
    assert st.status == "interrupted"
    return took, st


def test_ctrl_c_in_a_sampling_batch_or_an_update_stops_in_seconds_and_resumes_to_the_same_run(tmp_path, evaluator):
    """Ctrl-C drops the batch (or update) in flight at once, keeps the batches recorded before it, and a resume
    gives the uninterrupted run."""
    cfg = _cfg(tmp_path, ["search.cycles=1", "search.warm_start=false"])
    whole = _open(tmp_path / "whole", cfg, MutationGenerator(seed=2), evaluator)
    whole.run()
    whole.close()
    want = _generations(tmp_path / "whole")

    took, st = _interrupted_then_resumed(tmp_path, evaluator, cfg, SlowBatch(seed=2, slow_batch=3))
    assert took < 5, f"Ctrl-C in a sampling batch took {took:.1f} s"  # vs the batch's 60 s
    assert (st.cycle, st.phase) == (0, "generate")
    kept = [g for g in _generations(tmp_path / "cut") if g[0].startswith("s0-c000-")]
    assert len(kept) == 2, "the two batches finished before Ctrl-C are kept; the one in flight is dropped"
    loop = _open(tmp_path / "cut", None, MutationGenerator(seed=2), evaluator)
    loop.run()
    loop.close()
    assert _generations(tmp_path / "cut") == want

    shutil.rmtree(tmp_path / "cut")
    took, st = _interrupted_then_resumed(tmp_path, SlowEvaluations(evaluator, slow_call=3), cfg,
                                         MutationGenerator(seed=2))
    assert took < 5, f"Ctrl-C in a proxy training took {took:.1f} s"
    assert st.cycle == 0 and st.phase in ("generate", "train")
    loop = _open(tmp_path / "cut", None, MutationGenerator(seed=2), evaluator)
    loop.run()
    loop.close()
    assert _generations(tmp_path / "cut") == want

    shutil.rmtree(tmp_path / "cut")
    took, st = _interrupted_then_resumed(tmp_path, evaluator, cfg, SlowUpdate(seed=2, slow_update=1))
    assert took < 5, f"Ctrl-C in a CE update took {took:.1f} s"
    assert (st.cycle, st.phase) == (0, "update")
    loop = _open(tmp_path / "cut", None, MutationGenerator(seed=2), evaluator)
    loop.run()
    loop.close()
    assert _generations(tmp_path / "cut") == want


def test_a_generator_that_learns_nothing_gets_no_warm_start(tmp_path):
    """The mutation control's update changes nothing: no 'expected about 9 min' warm start, just its checkpoint."""
    lines: list[str] = []
    loop = SearchLoop.open(tmp_path / "run", _cfg(tmp_path), MutationGenerator(seed=1), None, CORPUS, progress=False,
                           echo=lines.append)
    try:
        loop.updates.warm_start()
    finally:
        loop.close()
    assert not [ln for ln in lines if "warm start" in ln], lines
    assert (tmp_path / "run" / "checkpoints" / "warm" / "mutation.json").is_file()


def test_a_shipped_warm_start_for_the_same_key_is_used_instead_of_training(tmp_path, monkeypatch):
    from cenas_jax.search.generator import save_checkpoint

    def warm(run, env):
        monkeypatch.setenv("CENAS_SHIPPED_WARM_STARTS", env)
        lines: list[str] = []
        gen = ScriptedGenerator(_completions())
        loop = SearchLoop.open(tmp_path / run, _cfg(tmp_path), gen, None, CORPUS, progress=False, echo=lines.append)
        try:
            loop.updates.warm_start()
            with RunStore(tmp_path / run) as s:
                record = {c["cycle"]: c for c in s.cycles(loop.run_id)}[-1]["warm_start"]
        finally:
            loop.close()
        return gen, lines, record

    shipped = tmp_path / "shipped"
    trained, _, record = warm("first", str(shipped))  # nothing shipped yet: trained
    assert trained.updates and record["reused"] is False
    save_checkpoint(trained, shipped / record["key"])  # what `make warm-start` puts into the package
    gen, lines, again = warm("second", str(shipped))
    assert again == {"key": record["key"], "reused": True}
    assert gen.updates == trained.updates, "the shipped adapter state is restored, not trained again"
    assert any("reusing the shipped adapter" in ln for ln in lines), lines
    gen, _, off = warm("third", "")  # switched off: trains
    assert off["reused"] is False and len(gen.updates) == 1
    # Another key (other warm-start settings) does not take the shipped adapter.
    monkeypatch.setenv("CENAS_SHIPPED_WARM_STARTS", str(shipped))
    loop = SearchLoop.open(tmp_path / "fourth", _cfg(tmp_path, ["search.warm_start_passes=2"]), ScriptedGenerator(_completions()),
                           None, CORPUS, progress=False, echo=lambda s: None)
    try:
        loop.updates.warm_start()
        assert loop.updates.generator.updates == [trained.updates[0]] and \
            {c["cycle"]: c for c in loop.store.cycles(loop.run_id)}[-1]["warm_start"]["reused"] is False
    finally:
        loop.close()
