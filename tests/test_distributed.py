"""Multi-host runs (``cenas run --distributed``, ``cenas launch``; DESIGN.md §7 "Many hosts").

The protocol's logic is tested in one process over an in-memory key-value store (a follower ``serve``s in a
thread). The real thing runs in subprocesses (``jax.distributed.initialize`` must come before any backend
use): 2 processes on localhost CPU with gloo collectives give the store 1 process gives on the same seed,
with the mutation generator and with a tiny Llama and the LLM generator; killing process 1 mid-cycle ends
both cleanly and the resume completes the same store.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cenas_jax.distributed import group as grp
from cenas_jax.distributed import roles
from cenas_jax.errors import UserError
from cenas_jax.search.mutation import MutationGenerator
from cenas_jax.search.prompts import Prompt

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- set-up


def test_resolve_prefers_flags_then_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert grp.resolve(env=env) == grp.DistributedSpec("h:1", 4, 3)
    assert grp.resolve("x:2", 2, 1, env=env) == grp.DistributedSpec("x:2", 2, 1)
    assert grp.resolve(env={}) == grp.DistributedSpec(None, None, None)  # left to JAX's cluster detection
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES"):
        grp.resolve(env={"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(UserError, match="not in 0..1"):
        grp.resolve(num_processes=2, process_id=2, env={})


def test_distributed_flags_without_distributed_are_refused(tmp_path, capsys):
    from cenas_jax.cli import main

    assert main(["run", str(tmp_path / "x.yaml"), "--process-id", "1"]) == 2
    assert "need --distributed" in capsys.readouterr().err


def test_deal_gives_batches_in_turn_and_drops_done_ones():
    plan = [[0, 1], [2, 3], [4, 5], [6]]
    assert roles.deal(plan, skip=(), n=2) == [[[0, 1], [4, 5]], [[2, 3], [6]]]
    # a batch whose every index is recorded is not redone; one partly recorded is redone whole
    assert roles.deal(plan, skip={0, 1, 2}, n=2) == [[[2, 3], [6]], [[4, 5]]]


def test_group_values_round_trip_in_parts():
    store = grp.MemoryStore()
    g = grp.Group(store, 0, 2)
    big = {"text": "x" * (3 * grp.PART_BYTES + 5)}
    g.put("k", big)
    assert g.try_get("k") == big and "k/part3" in store.data
    assert g.try_get("absent") is None
    store.data["bad"] = "nonsense"
    with pytest.raises(RuntimeError, match="not a value posted"):
        g.try_get("bad")


def test_a_silent_peer_is_lost_after_the_timeout():
    store = grp.MemoryStore()
    g0 = grp.Group(store, 0, 2, dead_after_s=0.3)
    g1 = grp.Group(store, 1, 2)
    g1.beat()
    g0.check_alive([1])  # first sight
    time.sleep(0.1)
    g1.beat()
    g0.check_alive([1])  # it moved
    with pytest.raises(grp.PeerLost, match="process 1 of 2 stopped answering"):
        g0.wait("never", watch=[1], poll_s=0.05)


# ---------------------------------------------------------------------------------------------- the protocol in one process


class _FakeEvaluator:
    """Evaluates by a formula of the source (a test double for the sandbox pool, which has its own tests)."""

    def __init__(self):
        self.seen: list[str] = []
        self.closed = False

    def evaluate_iter(self, cands, train=True):
        from cenas_jax.candidates.records import EvalRecord

        for c in cands:
            self.seen.append(c.id)
            acc = (int(hashlib.sha256(c.source.encode()).hexdigest(), 16) % 1000) / 1000
            yield EvalRecord(c.id, "ok", accuracy=acc, seed_accuracies=(acc,), params=7, dataset=c.dataset)

    def close(self):
        self.closed = True


class _BatchedMutation(MutationGenerator):
    """The mutation control with batches of 3 (to check that batches travel whole)."""

    def batches(self, prompts):
        return [list(range(k, min(k + 3, len(prompts)))) for k in range(0, len(prompts), 3)]


def _prompts(n):
    from cenas_jax.candidates.corpus import load_corpus

    src = load_corpus()[0].source
    return [Prompt(system="s", user=f"```python\n{src}\n```\n# {i}", mode="full") for i in range(n)]


@pytest.fixture
def pair():
    """A primary and a follower serving in a thread, over one in-memory store."""
    store = grp.MemoryStore()
    g0, g1 = grp.Group(store, 0, 2), grp.Group(store, 1, 2)
    follower_eval = _FakeEvaluator()
    result = {}

    def run():
        result["rc"] = roles.serve(g1, lambda cfg: (_BatchedMutation(seed=cfg["seed"]), follower_eval), echo=lambda s: None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    primary = roles.Primary(g0)
    primary.hello({"seed": 5})
    primary.wait_ready(MutationGenerator.fingerprint)
    yield primary, follower_eval, result, t
    if t.is_alive():
        primary.shutdown("test over")
        t.join(5)


def test_generations_are_the_single_process_ones_and_every_batch_is_recorded_once(pair):
    primary, _, _, _ = pair
    n = 10
    prompts, temps, seeds = _prompts(n), [0.7] * n, list(range(100, 100 + n))
    alone = _BatchedMutation(seed=5).generate(prompts, temps, seeds)
    dist = roles.DistributedGenerator(_BatchedMutation(seed=5), primary)
    calls = []
    out = dist.generate(prompts, temps, seeds, skip={1}, on_batch=lambda ids, gens: calls.append(ids))
    assert out[1] is None
    assert [g.text for i, g in enumerate(out) if i != 1] == [g.text for i, g in enumerate(alone) if i != 1]
    # batches [0,1,2] [3,4,5] [6,7,8] [9]: process 0 samples the 1st and 3rd (recorded as its generator hands
    # them over: one by one for the mutation control), process 1 the others, which arrive whole
    assert sorted(i for c in calls for i in c) == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert sorted(map(tuple, calls)) == [(0,), (2,), (3, 4, 5), (6,), (7,), (8,), (9,)]


def test_evaluations_are_dealt_out_and_come_back_parsed(pair):
    from cenas_jax.candidates.records import Candidate

    primary, follower_eval, _, _ = pair
    cands = [Candidate(id=f"c{i}", source=f"x = {i}", dataset="digits") for i in range(5)]
    local = _FakeEvaluator()
    recs = list(roles.DistributedEvaluator(local, primary).evaluate_iter(cands))
    assert sorted(r.candidate_id for r in recs) == [f"c{i}" for i in range(5)]
    assert local.seen == ["c0", "c2", "c4"] and follower_eval.seen == ["c1", "c3"]
    want = {r.candidate_id: r.accuracy for r in _FakeEvaluator().evaluate_iter(cands)}
    assert {r.candidate_id: r.accuracy for r in recs} == want


def test_a_forged_record_from_another_process_is_an_error_record(pair):
    from cenas_jax.candidates.records import Candidate

    primary, _, _, _ = pair
    seq = primary.seq + 1
    cands = [Candidate(id="c0", source="a", dataset="digits"), Candidate(id="c1", source="b", dataset="digits")]
    # Another process answers first, for c1, with an accuracy out of range: never a score in the store.
    primary.group.put(f"e/{seq}/1", {"candidate_id": "c1", "status": "ok", "accuracy": 7.5})
    recs = {r.candidate_id: r for r in roles.DistributedEvaluator(_FakeEvaluator(), primary).evaluate_iter(cands)}
    assert recs["c1"].status == "error" and recs["c1"].accuracy is None and "protocol violation" in recs["c1"].error_message


def test_shutdown_ends_the_follower_with_the_code_and_closes_its_pool(pair):
    primary, follower_eval, result, t = pair
    primary.shutdown("interrupted", 75)
    t.join(5)
    assert result["rc"] == 75 and follower_eval.closed


def test_a_follower_whose_primary_goes_silent_stops():
    store = grp.MemoryStore()
    g1 = grp.Group(store, 1, 2, dead_after_s=0.3)
    store.key_value_set("hb/0", "1", True)
    rc = roles.serve(g1, lambda cfg: None, echo=lambda s: None)
    assert rc == 75


# ---------------------------------------------------------------------------------------------- real processes


def _dump(run_dir: Path) -> list[tuple]:
    from cenas_jax.store import PROXY, RunStore

    with RunStore(run_dir, create=False) as s:
        out = []
        for r in sorted(s.candidates(), key=lambda r: r["id"]):
            ev = s.latest_evaluation(r["id"], PROXY)
            out.append((r["id"], hashlib.sha256((r["source"] or "").encode()).hexdigest(),
                        hashlib.sha256((r["raw_text"] or "").encode()).hexdigest(), r["verdict"],
                        None if ev is None else ev.accuracy))
        return out


def _env(tmp_path: Path) -> dict[str, str]:
    # Each run its own cache: a warm start cached by one run must not be reused by the other.
    return dict(os.environ, CENAS_CACHE=str(tmp_path / "cache"), CENAS_SHIPPED_WARM_STARTS="", JAX_PLATFORMS="cpu")


def _cenas(args: list[str], tmp_path: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cenas_jax", *args], env=_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


MUTATION = """
seed: 3
data: {name: digits}
train: {epochs: 1, batch_size: 64, optimizer: sgd, learning_rate: 0.05, momentum: 0.9}
sandbox: {workers: 1, timeout_s: 120}
search: {generator: mutation, cycles: 2, candidates_per_cycle: 5, mode: mixed, corpus: [mlp_small, lenet5, all_conv]}
"""


def _tiny_llm_config(tmp_path: Path) -> Path:
    from test_llm_model import _save_char_tokenizer, _save_tiny

    ckpt = tmp_path / "tiny-llama"
    _save_tiny(ckpt, "tied")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["max_position_embeddings"] = 16384  # character tokens: a corpus program is a few thousand
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _save_char_tokenizer(ckpt)
    path = tmp_path / "llm.yaml"
    path.write_text(f"""
seed: 0
data: {{name: digits}}
train: {{epochs: 1, batch_size: 64, optimizer: sgd, learning_rate: 0.05, momentum: 0.9}}
sandbox: {{workers: 1, timeout_s: 120}}
llm:
  model: {{name: {ckpt}, chat_template: true}}
  sampling: {{temperature: 0.7, max_new_tokens: 48, max_new_tokens_delta: 32, batch_size: 2}}
  lora: {{rank: 4, alpha: 8}}
  finetune: {{learning_rate: 0.01, epochs: 1, batch_size: 2, max_seq_len: 4096}}
search: {{cycles: 2, candidates_per_cycle: 5, mode: mixed, corpus: [mlp_small, lenet5, all_conv],
          update_token_budget: 20000}}
""")
    return path


def _same_store_on_one_and_two_processes(tmp_path: Path, config: Path) -> None:
    one = _cenas(["run", str(config), "--run-dir", str(tmp_path / "one"), "--no-progress"], tmp_path / "a")
    assert one.returncode == 0, one.stdout + one.stderr
    two = _cenas(["launch", "--local-processes", "2", str(config), "--run-dir", str(tmp_path / "two")], tmp_path / "b")
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes ready" in two.stdout and "[p1] process 1: done" in two.stdout
    a, b = _dump(tmp_path / "one"), _dump(tmp_path / "two")
    assert len(a) > 10 and any(x[4] is not None for x in a)
    assert a == b


@pytest.mark.slow
def test_two_processes_give_the_one_process_store_mutation(tmp_path):
    config = tmp_path / "mutation.yaml"
    config.write_text(MUTATION)
    _same_store_on_one_and_two_processes(tmp_path, config)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_two_processes_give_the_one_process_store_llm(tmp_path):
    _same_store_on_one_and_two_processes(tmp_path, _tiny_llm_config(tmp_path))
    # Extending both runs by a cycle restores the last adapters (every process reads them) and updates again.
    one = _cenas(["resume", str(tmp_path / "one"), "--set", "search.cycles=3", "--no-progress"], tmp_path / "a")
    assert one.returncode == 0, one.stdout + one.stderr
    two = _cenas(["launch", "--local-processes", "2", "--resume", str(tmp_path / "two"), "--set", "search.cycles=3"],
                 tmp_path / "b")
    assert two.returncode == 0, two.stdout + two.stderr
    assert "cycle 2 (of 0-2)" in two.stdout
    assert _dump(tmp_path / "one") == _dump(tmp_path / "two")


@pytest.mark.slow
def test_killing_process_1_mid_cycle_stops_both_and_the_resume_completes(tmp_path):
    config = tmp_path / "mutation.yaml"
    config.write_text(MUTATION.replace("epochs: 1,", "epochs: 4,"))  # a train phase long enough to kill into
    run = tmp_path / "two"
    env = _env(tmp_path / "b")
    port = str(__import__("cenas_jax.cli.launch", fromlist=["free_port"]).free_port())
    procs = []
    for i in range(2):
        e = dict(env, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cenas_jax", "run", str(config), "--run-dir", str(run), "--distributed",
             "--peer-timeout", "5", "--no-progress"], env=e, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 600
    while time.time() < deadline:  # cycle 0's training phase: process 1 is training its share
        state = run / "state.json"
        if state.exists() and json.loads(state.read_text()).get("phase") == "train" and \
                json.loads(state.read_text()).get("cycle") == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the run never reached cycle 0's training phase")
    procs[1].send_signal(signal.SIGKILL)
    out0, _ = procs[0].communicate(timeout=300)
    procs[1].wait(timeout=60)
    assert procs[0].returncode == 75, out0
    assert "process 1 of 2 stopped answering" in out0 and "cenas resume" in out0 and "--distributed" in out0
    st = json.loads((run / "state.json").read_text())
    assert st["status"] == "interrupted" and (st["cycle"], st["phase"]) == (0, "train")

    res = _cenas(["launch", "--local-processes", "2", "--resume", str(run)], tmp_path / "b")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    one = _cenas(["run", str(config), "--run-dir", str(tmp_path / "one"), "--no-progress"], tmp_path / "a")
    assert one.returncode == 0, one.stdout + one.stderr
    assert _dump(run) == _dump(tmp_path / "one")  # nothing lost, nothing recorded twice


def test_distributed_score_fn_gives_the_local_scores_in_order():
    from cenas_jax.config import TrainConfig
    from cenas_jax.proxy_snr.experiment import Arch, ArchScores

    def local(archs, train_cfg, seed):  # a formula of (source, epochs, seed): a test double for the sandbox
        return [ArchScores(error="bad") if "bad" in a.source else
                ArchScores(seed_accuracies=tuple((len(a.source) * (k + 1) + seed + train_cfg.epochs) % 10 / 10
                                                 for k in range(3))) for a in archs]

    store = grp.MemoryStore()
    g0, g1 = grp.Group(store, 0, 2), grp.Group(store, 1, 2)
    t = threading.Thread(target=roles.serve, args=(g1, lambda cfg: (roles.ScoreHost(local),) * 2),
                         kwargs={"echo": lambda s: None}, daemon=True)
    t.start()
    primary = roles.Primary(g0)
    primary.hello({})
    primary.wait_ready(roles.ScoreHost.fingerprint)
    archs = [Arch(id=f"a{i}", source="x" * i + ("bad" if i == 3 else "")) for i in range(5)]
    got = roles.distributed_score_fn(primary, local)(archs, TrainConfig(epochs=2.0), 7)
    assert got == local(archs, TrainConfig(epochs=2.0), 7)
    primary.shutdown()
    t.join(5)


@pytest.mark.slow
def test_proxy_snr_on_two_processes_gives_the_one_process_scores(tmp_path):
    cfg = tmp_path / "psnr.yaml"
    cfg.write_text("""
seed: 0
data: {name: digits}
train: {epochs: 1, batch_size: 64, optimizer: sgd, learning_rate: 0.01, momentum: 0.9}
sandbox: {workers: 1, timeout_s: 300}
proxy_snr: {architectures: [mlp_small, lenet5, all_conv], seeds: 2, proxy_epochs: 1.0, truth_epochs: 2.0}
""")
    one = _cenas(["proxy-snr", str(cfg), "--out", str(tmp_path / "one"), "--no-progress"], tmp_path / "a")
    assert one.returncode == 0, one.stdout + one.stderr
    port = __import__("cenas_jax.cli.launch", fromlist=["free_port"]).free_port()
    env = _env(tmp_path / "b")
    procs = [subprocess.Popen([sys.executable, "-m", "cenas_jax", "proxy-snr", str(cfg), "--out", str(tmp_path / "two"),
                               "--no-progress", "--distributed", "--coordinator", f"localhost:{port}",
                               "--num-processes", "2", "--process-id", str(i)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    a = json.loads((tmp_path / "one" / "proxy_snr.json").read_text())["analysis"]
    b = json.loads((tmp_path / "two" / "proxy_snr.json").read_text())["analysis"]
    assert a == b
