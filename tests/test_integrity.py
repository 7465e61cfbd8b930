"""Scores no candidate can forge (DESIGN.md §3, "Integrity of scores"), checked by their effects.

Each attack runs with the static policy bypassed (the code reaches ``sys`` and every module of the
process it runs in), as a candidate whose *real* score is known in advance: its logits are always
zero, so it predicts class 0 and its real accuracy is the share of class 0 in the validation split.
Whatever it does to the process it runs in (the tracer), its record must carry that real score, or
be an error, never the forgery. After each attack a good candidate in the same worker must give
exactly the result it gives alone.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest
from programs import mlp

from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig
from cenas_jax.data import load_dataset

FULL_ISOLATION = sys.platform.startswith("linux") and os.geteuid() == 0

GOOD = mlp(32)

# Always-zero logits: argmax is class 0, whatever the weights.
ZERO_NET = """
import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x) * 0.0
"""

FAKE_RESULT = """
import typing
sys = typing.sys
B = sys.modules["builtins"]  # the real builtins: the restricted ones lack open, hasattr, OSError
struct = sys.modules["struct"]
json = sys.modules["json"]


class _Fake:
    seed_accuracies = (1.0,)
    accuracy = 1.0
    loss = 0.0
    params = 1
    flops = 1.0
    compile_s = 0.0
    train_s = 0.0


def _fake(*args, **kwargs):
    return _Fake()
"""

ATTACKS = {
    # Replace every function a trainer could score with, in every cenas module it can reach.
    "patch_trainer": FAKE_RESULT + """
for _name, _mod in list(sys.modules.items()):
    if _name.startswith("cenas_jax") and _mod is not None:
        for _attr in ("train_exported", "train_candidate", "load_programs", "collect_tracer", "run_task",
                      "record_from_worker", "evaluate_accuracy", "compiled_flops"):
            if B.hasattr(_mod, _attr):
                B.setattr(_mod, _attr, _fake)
""",
    # Walk the frames up to the code that talks to the trainer, and send a forged result with its nonce.
    "forge_frame_and_exit": FAKE_RESULT + """
_f = sys._getframe()
while _f is not None and "conn" not in _f.f_locals:
    _f = _f.f_back
if _f is not None:
    _nonce = _f.f_locals.get("nonce")
    _body = json.dumps({"type": "result", "nonce": _nonce, "status": "ok", "accuracy": 1.0,
                        "seed_accuracies": [1.0], "loss": 0.0, "params": 1, "blob_sizes": {}}).encode()
    _f.f_locals["conn"].sendall(struct.pack(">I", len(_body)) + _body)
    sys.modules["os"]._exit(0)
""",
    # The same forged frame, then carry on as if nothing happened.
    "forge_frame_and_continue": FAKE_RESULT + """
_f = sys._getframe()
while _f is not None and "conn" not in _f.f_locals:
    _f = _f.f_back
if _f is not None:
    _body = json.dumps({"type": "result", "nonce": _f.f_locals.get("nonce"), "status": "ok", "accuracy": 1.0,
                        "seed_accuracies": [1.0], "loss": 0.0, "blob_sizes": {}}).encode()
    _f.f_locals["conn"].sendall(struct.pack(">I", len(_body)) + _body)
""",
    # Patch classes and functions of JAX, Flax and optax that later candidates would use.
    "patch_classes": FAKE_RESULT + """
import jax
import jax.numpy as jnp
optax = sys.modules["optax"]
import flax.linen as _nn
jax.stages.Compiled.__call__ = _fake
_nn.Module.__post_init__ = _fake
jnp.argmax = _fake
optax.softmax_cross_entropy_with_integer_labels = _fake
""",
    # Look for the datasets (labels included) wherever the trainer could have them.
    "read_data": FAKE_RESULT + """
os = sys.modules["os"]
_seen = []
for _root in ["/tmp/.cenas-data"] + [f"/proc/{p}/root/tmp/.cenas-data" for p in ("1", "2", str(os.getppid()))]:
    try:
        for _dir, _subdirs, _files in os.walk(_root):
            for _name in _files:
                with B.open(os.path.join(_dir, _name), "rb") as _fh:
                    _fh.read(16)
                _seen.append(os.path.join(_dir, _name))
    except B.OSError:
        pass
for _p in os.listdir("/proc"):
    if _p.isdigit() and _p != str(os.getpid()):
        try:
            _seen.append(os.readlink(f"/proc/{_p}/fd/3"))
            with B.open(f"/proc/{_p}/mem", "rb") as _fh:
                _seen.append("mem of " + _p)
        except B.OSError:
            pass
if any(".npy" in s or s.startswith("mem of") for s in _seen):
    raise RuntimeError("SAW_DATA " + repr(_seen[:5]))
""",
    # Kill the process that forked it, and try the trainer (pid 2 in the sandbox's pid namespace).
    "kill_parents": FAKE_RESULT + """
os = sys.modules["os"]
for _pid in (2, os.getppid()):
    try:
        os.kill(_pid, 9)
    except B.OSError:
        pass
""",
}

pytestmark = pytest.mark.skipif(not FULL_ISOLATION, reason="needs full isolation (Linux, root), as in DESIGN.md §3")

TRAIN = TrainConfig(epochs=1, seeds=2)


@pytest.fixture(scope="module")
def zero_accuracy() -> float:
    ds = load_dataset(DataConfig(name="digits"))
    return float(np.mean(np.asarray(ds.y_val) == 0))


@pytest.fixture(scope="module")
def good_alone():
    with Evaluator(DataConfig(name="digits"), TRAIN, SandboxConfig(workers=1)) as ev:
        (rec,) = ev.evaluate([Candidate("good", GOOD)])
    assert rec.status == "ok", rec
    return rec


def _score(rec):
    return rec.accuracy, rec.seed_accuracies, rec.loss, rec.params


def test_attacks_get_their_real_score_and_leave_later_candidates_alone(zero_accuracy, good_alone):
    items = []
    for name, prelude in ATTACKS.items():
        items += [Candidate(name, prelude + ZERO_NET), Candidate(f"good-after-{name}", GOOD)]
    with Evaluator(DataConfig(name="digits"), TRAIN, SandboxConfig(workers=1), allow_layer_bypass=True) as ev:
        recs = ev.evaluate_bypassing(items, "policy", train=True)
    by_id = {r.candidate_id: r for r in recs}
    for name in ATTACKS:
        rec = by_id[name]
        if rec.status == "ok":  # it ran to the end: its score is the real one
            assert rec.accuracy == pytest.approx(zero_accuracy, abs=1e-12), (name, rec)
            assert rec.seed_accuracies == pytest.approx((zero_accuracy,) * TRAIN.seeds, abs=1e-12), (name, rec)
        else:  # or it broke its own evaluation, and is an error record without a score
            assert rec.accuracy is None and rec.seed_accuracies == (), (name, rec)
            assert "SAW_DATA" not in (rec.error_message or ""), rec.error_message
        after = by_id[f"good-after-{name}"]
        assert after.status == "ok", (name, after)
        assert _score(after) == _score(good_alone), name
    # What each attack came to (the forged result frame never stands).
    assert by_id["patch_trainer"].status == "ok"
    assert by_id["read_data"].status == "ok"
    assert by_id["forge_frame_and_exit"].error_kind == "export"
    assert by_id["forge_frame_and_continue"].error_kind == "crash"
    assert "protocol violation" in by_id["forge_frame_and_continue"].error_message
    assert by_id["kill_parents"].status == "error" and by_id["kill_parents"].error_kind == "crash"


def test_a_zero_logit_net_scores_the_share_of_class_zero(zero_accuracy):
    """The yardstick of the test above, checked on its own: without any attack, the same number."""
    with Evaluator(DataConfig(name="digits"), TRAIN, SandboxConfig(workers=1)) as ev:
        (rec,) = ev.evaluate([Candidate("zero", ZERO_NET)])
    assert rec.status == "ok" and rec.accuracy == pytest.approx(zero_accuracy, abs=1e-12)
    assert 0.05 < zero_accuracy < 0.2


def test_the_tracer_layers_hold_in_full_isolation():
    with Evaluator(DataConfig(name="digits"), TRAIN, SandboxConfig(workers=1)) as ev:
        layers = ev.probe_isolation()["layers"]
    assert layers["tracer_own_uid"]["active"] and layers["tracer_no_data"]["active"]


def test_a_candidate_calling_a_host_callback_is_refused_with_its_own_kind():
    source = GOOD.replace("return nn.Dense(self.num_classes)(x)",
                          "x = jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape, x.dtype), x)\n"
                          "        return nn.Dense(self.num_classes)(x)").replace(
        "import flax.linen as nn", "import flax.linen as nn\nimport jax")  # fmt: skip
    with Evaluator(DataConfig(name="digits"), dataclasses.replace(TRAIN, seeds=1), SandboxConfig(workers=1)) as ev:
        (rec,) = ev.evaluate([Candidate("callback", source)])
    assert rec.status == "error" and rec.error_kind == "export", rec
    assert "custom call" in rec.error_message
    assert rec.accuracy is None


class PolicyMissesEverything(Evaluator):
    """The sandbox with its static policy bypassed for every candidate: the policy is a first layer, not the
    guard (DESIGN.md §3), so the search must stay sound when an attack gets past it."""

    def evaluate_iter(self, candidates, train=True, progress=False):
        yield from self.evaluate_bypassing(candidates, "policy", train=train)


def test_a_search_with_a_forging_generation_completes_and_does_not_make_it_an_elite(tmp_path, zero_accuracy):
    from cenas_jax.config import load_config
    from cenas_jax.rundir import RunDir
    from cenas_jax.search.generator import ScriptedGenerator
    from cenas_jax.search.loop import SearchLoop
    from cenas_jax.store import RunStore

    @dataclasses.dataclass(frozen=True)
    class Entry:
        name: str
        source: str

    corpus = [Entry("mlp_a", GOOD), Entry("mlp_b", GOOD.replace("Dense(32)", "Dense(48)").replace("relu", "tanh"))]
    forger = ATTACKS["patch_trainer"] + ZERO_NET
    others = [GOOD.replace("Dense(32)", f"Dense({w})").replace("nn.relu", act) for w, act in
              ((96, "nn.gelu"), (20, "nn.swish"), (64, "nn.elu"))]  # fmt: skip
    fence = lambda src: f"```python\n{src}```"  # noqa: E731 - a one-line local helper
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        "seed: 0\ndata: {name: digits}\ntrain: {epochs: 1, seeds: 2}\nsandbox: {workers: 1, timeout_s: 120}\n"
        "search: {cycles: 1, candidates_per_cycle: 4, mode: full, elite_rho: 0.5, warm_start: false}\n"
    )
    cfg = load_config(cfg_path, [])
    gen = ScriptedGenerator([fence(forger)] + [fence(s) for s in others])
    with PolicyMissesEverything(cfg.data, cfg.train, cfg.sandbox, allow_layer_bypass=True) as ev:
        loop = SearchLoop.open(tmp_path / "run", cfg, gen, ev, corpus, progress=False, echo=lambda s: None)
        loop.run()
        loop.close()
    rd = RunDir(tmp_path / "run")
    assert rd.load_state().status == "finished"
    with RunStore(rd.path) as s:
        rows = {r["id"]: r for r in s.candidates(run_id=1)}
        (forged,) = [r for r in rows.values() if r["cycle"] == 0 and "_fake" in (r["source"] or "")]
        (ev_row,) = s.evaluations(forged["id"], budget="proxy")
        assert ev_row["status"] == "ok" and ev_row["accuracy"] == pytest.approx(zero_accuracy, abs=1e-12)
        cycles = {c["cycle"]: c for c in s.cycles(1)}
        assert forged["id"] not in cycles[0]["elites"] and cycles[0]["elites"]
        trained = [r for r in rows.values() if r["cycle"] == 0 and r["quality"] is not None]
        assert forged["quality"] == min(r["quality"] for r in trained)
