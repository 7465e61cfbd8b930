"""The CE update's pairs (search/update.py) without a sandbox, an LLM or a run: elite pairs, replay pairs, the
token budget and the warm-start key, with their order and content pinned (the update's batches, and so a run's
generations after it, follow them)."""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from fractions import Fraction

import pytest

from cenas_jax.search import ce_update, prompts, update
from cenas_jax.search.loop import SearchLoop
from cenas_jax.store import CandidateRow, RunStore

MLP = """import flax.linen as nn


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense({w})(x)
        x = nn.{act}(x)
        return nn.Dense(self.num_classes)(x)
"""


def mlp(w: int, act: str = "relu") -> str:
    return MLP.format(w=w, act=act)


@dataclass(frozen=True)
class Entry:
    name: str
    source: str


CORPUS = [Entry("a", mlp(64)), Entry("b", mlp(32, "tanh")), Entry("c", mlp(48, "gelu"))]
SYSTEM = prompts.load_template("system").template


def _digest(pairs) -> str:
    h = hashlib.sha256()
    for p, c in pairs:
        for part in (p.system, p.user, p.mode, str(p.dataset), str(p.edit_format), c):
            h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- replay pairs


# Pinned from the loop's replay pairs before they moved into update.py (same seeds, same corpus): a change
# here changes every run's warm start and updates.
@pytest.mark.parametrize("mode, digest, modes", [
    ("mixed", "7d716bf47596c1d0", ["delta", "full", "full", "delta", "full", "full", "delta"]),
    ("delta", "f092b3fe07cab3dd", ["delta"] * 7),
    ("full", "2cf6a32dcf0e7959", ["full"] * 7),
])
def test_replay_pairs_are_pinned(mode, digest, modes):
    pairs = update.replay_pairs(CORPUS, 7, seed=3, seed_offset=2, mode=mode, delta_share=0.5, dataset="digits",
                                edit_format="search_replace")
    assert [p.mode for p, _ in pairs] == modes
    assert _digest(pairs) == digest
    for p, c in pairs:  # each pair in its answer frame: what the generator's encode_pair requires
        assert c.startswith(p.answer_prefix) and p.dataset == "digits"
        if p.mode == "full":
            assert c in {prompts.full_completion(e.source) for e in CORPUS}


def test_replay_pairs_depend_on_the_seed_and_offset_only():
    kw = dict(mode="mixed", delta_share=0.5, dataset="digits", edit_format="search_replace")
    a = update.replay_pairs(CORPUS, 5, seed=0, seed_offset=1, **kw)
    assert _digest(a) == _digest(update.replay_pairs(CORPUS, 5, seed=0, seed_offset=1, **kw))
    assert _digest(a) != _digest(update.replay_pairs(CORPUS, 5, seed=0, seed_offset=2, **kw))
    assert update.replay_pairs([], 5, seed=0, seed_offset=1, **kw) == []
    assert update.replay_pairs(CORPUS, 0, seed=0, seed_offset=1, **kw) == []


def test_replay_count():
    assert update.replay_count(0, 1.0) == 1  # an update with no elite still replays the corpus
    assert update.replay_count(3, 1.0) == 3
    assert update.replay_count(3, 0.5) == 2
    assert update.replay_count(4, 0.0) == 0


# ---------------------------------------------------------------- elite pairs


def test_elite_pairs_order_and_content():
    parent, child = mlp(64), mlp(96)
    elites = [
        update.EliteInput(id="e0", mode="delta", dataset="digits", prompt="DELTA PROMPT", source=child,
                          parent_source=parent, parent_dataset="digits", parent_accuracy=0.9),
        update.EliteInput(id="e1", mode="full", dataset="mnist", prompt="FULL PROMPT", source=mlp(20, "gelu")),
        update.EliteInput(id="e2", mode="full", dataset="digits", prompt=None, source=mlp(30)),  # never sampled
    ]
    out = update.elite_pairs(elites, "search_replace")
    assert out.skipped == ("e2",) and out.as_full == ()
    (p0, c0), (p1, c1) = out.pairs
    # The exact prompt each was sampled from, its canonical answer.
    assert p0 == prompts.Prompt(SYSTEM, "DELTA PROMPT", "delta", "digits", "search_replace")
    assert c0 == prompts.delta_completion(parent, child, "search_replace") and c0.startswith(p0.answer_prefix)
    assert p1 == prompts.Prompt(SYSTEM, "FULL PROMPT", "full", "mnist", None)
    assert c1 == prompts.full_completion(mlp(20, "gelu"))


def test_a_delta_elite_whose_edit_cannot_be_written_is_trained_as_a_full_program():
    parent = mlp(64)
    same = parent.replace("import flax.linen as nn\n", "import flax.linen as nn  # a comment\n")  # no-op edit
    elites = [
        update.EliteInput(id="e0", mode="full", dataset="digits", prompt="P0", source=mlp(20)),
        update.EliteInput(id="e1", mode="delta", dataset="digits", prompt="P1", source=same,
                          parent_source=parent, parent_dataset="mnist", parent_accuracy=0.75),
        update.EliteInput(id="e2", mode="delta", dataset="digits", prompt="P2", source=mlp(96),
                          parent_source=parent, parent_dataset="digits", parent_accuracy=0.75),
    ]
    out = update.elite_pairs(elites, "search_replace")
    assert [a.id for a in out.as_full] == ["e1"] and "identical" in out.as_full[0].reason
    assert len(out.pairs) == 3  # kept, in its place
    p, c = out.pairs[1]
    # The full-mode prompt a full slot shows with this parent as its reference elite, and the program.
    assert p == prompts.full_prompt(parent, score=0.75, dataset="digits", reference_dataset="mnist")
    assert c == prompts.full_completion(same) and c.startswith(p.answer_prefix)
    assert out.pairs[2][0].mode == "delta"


# ---------------------------------------------------------------- the loop reads the elites from the store


def test_the_loop_gathers_elite_inputs_from_a_store(tmp_path):
    parent, child = mlp(64), mlp(96)
    with RunStore(tmp_path) as s:
        rid = s.create_run("main")
        s.add_candidate(CandidateRow(id="L-digits-a", source=parent, run_id=rid, cycle=-1, idx=0, mode="corpus",
                                     dataset="digits"))
        s.add_evaluation("L-digits-a", {"status": "ok", "accuracy": 0.8, "seed_accuracies": [0.8]})
        s.add_evaluation("L-digits-a", {"status": "error", "error_kind": "crash"})  # latest ok is still 0.8
        s.add_candidate(CandidateRow(id="c0", source=child, run_id=rid, cycle=0, idx=0, mode="delta",
                                     parent_id="L-digits-a", dataset="digits", prompt="P-delta"))
        s.add_candidate(CandidateRow(id="c1", source=mlp(20), run_id=rid, cycle=0, idx=1, mode="full",
                                     dataset="digits", prompt="P-full"))
        inputs = ce_update.elite_inputs(s, ["c1", "gone", "c0"])
    assert [e.id for e in inputs] == ["c1", "c0"]  # elite order; an unknown id is left out
    assert inputs[1] == update.EliteInput(id="c0", mode="delta", dataset="digits", prompt="P-delta", source=child,
                                          parent_source=parent, parent_dataset="digits", parent_accuracy=0.8)
    assert inputs[0].parent_source is None
    pairs = update.elite_pairs(inputs, "search_replace").pairs
    assert [p.user for p, _ in pairs] == ["P-full", "P-delta"]


# ---------------------------------------------------------------- the token budget


def _pair(user: str, completion: str):
    return prompts.Prompt("sys", user, "full"), completion


def test_within_budget_counts_with_the_given_tokenizer_and_keeps_order():
    pairs = [_pair("a b", "c"), _pair("d", "e f g"), _pair("h", "i"), _pair("j", "k")]
    words = lambda p, c: len(p.user.split()) + len(c.split())  # noqa: E731 - a stand-in tokenizer
    assert update.within_budget(pairs, 7, words) == pairs[:2]  # 3 + 4 = 7 fits; + 2 does not
    assert update.within_budget(pairs, 9, words) == pairs[:3]
    assert update.within_budget(pairs, 100, words) == pairs
    assert update.within_budget(pairs, 1, words) == pairs[:1]  # the first pair is always kept
    assert update.within_budget([], 10, words) == []


def test_the_character_estimate_keeps_the_old_rule_exactly():
    # Generators without a tokenizer: a pair costs (system + user + completion characters) / 3, exactly, so a
    # budget of B tokens keeps what the old rule (characters <= 3 B) kept, also at the boundary.
    pairs = [_pair("x" * 7, "y" * 2), _pair("x" * 5, "y" * 1)]  # 12 and 9 characters with "sys"
    assert update.chars_estimate(*pairs[0]) == Fraction(12, 3)
    assert update.within_budget(pairs, 7, update.chars_estimate) == pairs  # 21 characters = 3 x 7
    assert update.within_budget(pairs, 6, update.chars_estimate) == pairs[:1]


def test_the_llm_generator_counts_the_ids_its_update_trains_on():
    from cenas_jax.search.llm_generator import LLMGenerator

    fake = types.SimpleNamespace(encode_pair=lambda p, c: ([1, 2, 3], [4, 5, 0]))
    assert LLMGenerator.count_tokens(fake, None, "x") == 6


# ---------------------------------------------------------------- the warm-start key


def test_warm_start_key_is_pinned_and_sees_every_input():
    pairs = update.replay_pairs(CORPUS, 4, seed=0, seed_offset=0, mode="mixed", delta_share=0.5, dataset="digits",
                                edit_format="search_replace")
    kw = dict(model="m:1", lora={"rank": 8}, finetune={"epochs": 1.0}, passes=3, learning_rate=0.002)
    key = update.warm_start_key(pairs, **kw)
    assert key == "ce0957eaa5d27aae"  # a cache key: runs reuse adapters by it
    for change in ({"model": "m:2"}, {"lora": {"rank": 16}}, {"finetune": {"epochs": 2.0}}, {"passes": 2},
                   {"learning_rate": 0.001}, {"recipe": update.WARM_START_RECIPE + 1}):
        assert update.warm_start_key(pairs, **{**kw, **change}) != key, change
    assert update.warm_start_key(pairs[:-1], **kw) != key
    assert update.warm_start_key(list(reversed(pairs)), **kw) != key  # the pairs' order is part of it


# ---------------------------------------------------------------- the loop's update phase, without a sandbox


def test_the_update_phase_trains_an_unwritable_delta_elite_as_a_full_program_and_counts_it(tmp_path):
    from cenas_jax.config import load_config
    from cenas_jax.report.analysis import analyse
    from cenas_jax.report.markdown import render
    from cenas_jax.search.generator import ScriptedGenerator, UpdateResult

    class Recording(ScriptedGenerator):
        def update(self, examples, seed, epochs=None, learning_rate=None):
            self.seen = list(examples)
            return UpdateResult(losses=(1.0,), steps=1, tokens=1)

    cfg = load_config(None, ["search.mode=mixed", "search.replay_weight=1.0"])
    gen, lines = Recording(["x"]), []
    loop = SearchLoop.open(tmp_path / "run", cfg, gen, None, CORPUS, progress=False, echo=lines.append)
    try:
        s, rid = loop.store, loop.run_id
        parent = mlp(64)
        s.add_candidate(CandidateRow(id="L-digits-a", source=parent, run_id=rid, cycle=-1, idx=0, mode="corpus",
                                     dataset="digits"))
        s.add_evaluation("L-digits-a", {"status": "ok", "accuracy": 0.8, "seed_accuracies": [0.8]})
        s.set_cycle(rid, -1, reference={"digits": 0.8})
        same = parent.replace("import flax.linen as nn\n", "import flax.linen as nn  # unchanged\n")
        for i, (cid, mode, src) in enumerate([("c-full", "full", mlp(20)), ("c-same", "delta", same),
                                              ("c-edit", "delta", mlp(96))]):
            s.add_candidate(CandidateRow(id=cid, source=src, run_id=rid, cycle=0, idx=i, mode=mode, dataset="digits",
                                         parent_id="L-digits-a" if mode == "delta" else None, prompt=f"P{i}"))
            s.add_evaluation(cid, {"status": "ok", "accuracy": 0.8, "seed_accuracies": [0.8]})
            s.update_candidate(cid, verdict="accepted", quality=1.0)
        s.set_cycle(rid, 0, gamma=1.0, elites=["c-edit", "c-same", "c-full"], elites_reused=False)
        loop.updates.run(0)
        record = {c["cycle"]: c for c in s.cycles(rid)}[0]["update"]
    finally:
        loop.close()
    # Three elite pairs in elite order (the unwritable one as a full-mode pair), then 3 replayed corpus pairs.
    assert [p.mode for p, _ in gen.seen[:3]] == ["delta", "full", "full"] and len(gen.seen) == 6
    assert gen.seen[1] == (prompts.full_prompt(parent, score=0.8, dataset="digits", reference_dataset="digits"),
                           prompts.full_completion(same))
    assert [p.user for p, _ in gen.seen[:3]] == ["P2", gen.seen[1][0].user, "P0"]
    assert record["elites_as_full"] == ["c-same"] and record["examples"] == 6
    assert any("elite c-same" in ln and "trained as a full program" in ln for ln in lines)
    a = analyse(tmp_path / "run")
    assert [c.elites_as_full for c in a.cycles] == [1]
    text = render(a, {})
    assert "*elites trained as full programs*: 1 delta elite(s)" in text and "(cycle 0: 1)" in text
