"""The store's named queries (what the phases ask of it) and the verdict enum, on a small hand-made store."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from cenas_jax.search.evaluate import QualityNorm
from cenas_jax.store import (
    CHECK,
    PROXY,
    VALID_VERDICTS,
    CandidateRow,
    EliteSet,
    Evaluation,
    References,
    RunStore,
    StoredCandidate,
    Verdict,
)


def _ok(acc, seeds=None, params=100):
    return {"status": "ok", "stage": "train", "accuracy": acc, "params": params,
            "seed_accuracies": list(seeds or [acc])}


def _err(kind="crash"):
    return {"status": "error", "error_kind": kind, "stage": "train", "error_message": f"it {kind}ed"}


@pytest.fixture()
def store(tmp_path):
    with RunStore(tmp_path) as s:
        rid = s.create_run("main")
        for i, (ds, acc) in enumerate([("digits", 0.6), ("digits", 0.8), ("digits", 0.9), ("mnist", 0.5)]):
            cid = f"L-{ds}-p{i}"
            s.add_candidate(CandidateRow(id=cid, source=f"p{i}", run_id=rid, cycle=-1, idx=i, mode="corpus", dataset=ds))
            s.add_evaluation(cid, _ok(acc))
        s.add_candidate(CandidateRow(id="L-digits-bad", source="bad", run_id=rid, cycle=-1, idx=9, mode="corpus",
                                     dataset="digits"))
        s.add_evaluation("L-digits-bad", _err())
        for i in range(4):
            s.add_candidate(CandidateRow(id=f"c0-{i}", source=f"g{i}", run_id=rid, cycle=0, idx=i, mode="full",
                                         dataset="digits", prompt="P"))
        s.add_evaluation("c0-0", _ok(0.7, params=7))
        s.update_candidate("c0-0", verdict=Verdict.ACCEPTED, quality=0.7 / 0.8)
        s.add_evaluation("c0-1", _err("nan"))
        s.update_candidate("c0-1", verdict=Verdict.ACCEPTED)
        s.add_evaluation("c0-2", _ok(0.85, params=3))
        s.update_candidate("c0-2", verdict=Verdict.ACCEPTED, quality=0.85 / 0.8)
        s.update_candidate("c0-3", verdict=Verdict.DUPLICATE)
        yield s, rid


def test_latest_evaluation_ok_or_any_status(store):
    s, rid = store
    s.add_evaluation("c0-0", _err("timeout"))  # a later failure: the latest ok is still the first
    ev = s.latest_evaluation("c0-0", PROXY)
    assert isinstance(ev, Evaluation) and ev.ok and ev.accuracy == 0.7 and ev.params == 7
    assert ev.seed_accuracies == (0.7,) and ev.degenerate is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.accuracy = 1.0  # type: ignore[misc]
    last = s.latest_evaluation("c0-0", PROXY, ok=False)
    assert not last.ok and last.error_kind == "timeout" and last.error_message == "it timeouted"
    assert s.latest_evaluation("c0-1", PROXY) is None
    assert s.latest_evaluation("c0-1", PROXY, ok=False).error_kind == "nan"
    assert s.latest_evaluation("c0-3", PROXY, ok=False) is None
    assert s.latest_evaluation("c0-0", CHECK, ok=False) is None
    s.add_evaluation("c0-2", _ok(0.95), budget="retrain-5ep", split="test")
    assert s.latest_evaluation("c0-2", "retrain-5ep", split="test").accuracy == 0.95
    assert s.latest_evaluation("c0-2", "retrain-5ep", split="val") is None
    # The dict form is what evaluations() returns.
    assert ev.to_dict() == s.evaluations("c0-0", budget=PROXY)[0]


def test_latest_evaluations_of_a_run(store):
    s, rid = store
    s.add_evaluation("c0-0", _ok(0.75))
    ok = s.latest_evaluations(rid, PROXY)
    assert "c0-1" not in ok and "L-digits-bad" not in ok and ok["c0-0"].accuracy == 0.75
    anyst = s.latest_evaluations(rid, PROXY, ok=False)
    assert anyst["c0-1"].status == "error" and set(anyst) == set(ok) | {"c0-1", "L-digits-bad"}
    assert s.latest_evaluations(rid + 1, PROXY) == {}


def test_latest_evaluations_of_the_whole_store(store):
    """run_id None: every candidate of the store, of any run or of none (what `cenas export` writes)."""
    s, rid = store
    other = s.create_run("other")
    s.add_candidate(CandidateRow(id="o-0", source="o", run_id=other, cycle=0, idx=0, mode="full", dataset="digits"))
    s.add_evaluation("o-0", _ok(0.4))
    s.add_evaluation("o-0", _err("timeout"))
    s.add_candidate(CandidateRow(id="loose", source="l"))  # no run (an evaluation stored outside the loop)
    s.add_evaluation("loose", _ok(0.3))
    s.add_evaluation("c0-0", _ok(0.5), budget=CHECK)
    everything = s.latest_evaluations(None, PROXY, ok=False)
    assert set(everything) == set(s.latest_evaluations(rid, PROXY, ok=False)) | {"o-0", "loose"}
    assert everything["o-0"].error_kind == "timeout" and everything["loose"].accuracy == 0.3
    assert s.latest_evaluations(None, PROXY)["o-0"].accuracy == 0.4  # the latest ok one
    assert set(s.latest_evaluations(None, CHECK, ok=False)) == {"c0-0"}
    # The same evaluations as the unfiltered evaluations(), the last stored of each candidate winning.
    last = {}
    for d in s.evaluations(budget=PROXY):
        last[d["candidate_id"]] = d
    assert {cid: e.to_dict() for cid, e in everything.items()} == last


def test_trained_candidates(store):
    s, rid = store
    trained = s.trained_candidates(rid, 0)
    assert [c.id for c in trained] == ["c0-0", "c0-2"]  # store order; no quality (failed, duplicate): not trained
    assert trained[1].quality == pytest.approx(0.85 / 0.8) and trained[1].params == 3 and trained[1].accuracy == 0.85
    assert isinstance(trained[0].candidate, StoredCandidate) and trained[0].candidate.verdict is Verdict.ACCEPTED
    assert s.trained_candidates(rid, 1) == []
    assert [c.id for c in s.trained_candidates(rid)] == ["c0-0", "c0-2"]  # corpus rows (cycle -1) are not generated


def test_elites_before_counts_search_cycles_only(store):
    s, rid = store
    assert s.elites_before(rid, 0) is None and s.elites_before(rid, 5) is None
    s.set_cycle(rid, -1, reference={"digits": 0.8}, elites=["L-digits-p2"])  # never a search cycle's elites
    assert s.elites_before(rid, 0) is None and s.elites_before(rid, 1) is None
    s.set_cycle(rid, 0, elites=["c0-2", "c0-0"], elites_reused=False)
    s.set_cycle(rid, 1, elites=[], elites_reused=True)  # selected none: S_0 stands
    assert s.elites_before(rid, 0) is None
    assert s.elites_before(rid, 1) == EliteSet(cycle=0, ids=("c0-2", "c0-0"), reused=False)
    assert s.elites_before(rid, 2) == EliteSet(cycle=0, ids=("c0-2", "c0-0"), reused=False)
    assert s.cycle_elites(rid, 1) == EliteSet(cycle=1, ids=(), reused=True)
    assert s.cycle_elites(rid, 0).ids == ("c0-2", "c0-0") and s.cycle_elites(rid, 2) is None


def test_reference_accuracies_recorded_and_computed(store):
    s, rid = store
    assert s.reference_accuracies(rid) == References() and not s.reference_accuracies(rid).recorded
    computed = s.corpus_reference(rid)  # the median of each dataset's corpus programs that trained
    assert dict(computed) == {"digits": 0.8, "mnist": 0.5} and not computed.recorded
    s.set_cycle(rid, -1, reference=dict(computed))
    rec = s.reference_accuracies(rid)
    assert rec.recorded and dict(rec) == {"digits": 0.8, "mnist": 0.5} and rec["digits"] == 0.8
    assert rec.get("cifar10") is None and "mnist" in rec


def test_the_loop_reads_the_recorded_reference_once(store):
    s, rid = store
    calls = []

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(s, name)

    norm = QualityNorm(Counting(), rid)
    assert dict(norm.references()) == {"digits": 0.8, "mnist": 0.5}  # not recorded: computed
    assert norm._recorded is None  # a computed reference is not cached (more of the corpus may train)
    assert dict(norm.references()) == {"digits": 0.8, "mnist": 0.5}
    assert calls == ["reference_accuracies", "corpus_reference"] * 2  # each call computes it again
    assert norm.quality(0.4, "digits") == pytest.approx(0.5) and norm.quality(None, "digits") is None
    s.set_cycle(rid, -1, reference={"digits": 0.8, "mnist": 0.5})
    calls.clear()
    for _ in range(5):
        assert norm.references()["digits"] == 0.8
    assert calls == ["reference_accuracies"]  # read once, then cached
    norm.forget()  # the reference phase recorded it again: read it back
    assert norm.references()["digits"] == 0.8 and calls == ["reference_accuracies"] * 2


def test_verdicts_are_stored_as_their_readable_strings(store):
    s, rid = store
    raw = sqlite3.connect(str(s.path)).execute("SELECT verdict, typeof(verdict) FROM candidates WHERE id = 'c0-3'")
    assert raw.fetchone() == ("duplicate", "text")
    row = s.get_candidate("c0-0")
    assert row["verdict"] == Verdict.ACCEPTED == "accepted" and type(row["verdict"]) is str
    assert StoredCandidate.from_dict(row).verdict is Verdict.ACCEPTED
    assert {"valid", "accepted", "duplicate"} == {str(v) for v in VALID_VERDICTS} and "invalid" not in VALID_VERDICTS
    s.add_candidates([CandidateRow(id="c1-0", source="", run_id=rid, cycle=1, idx=0, mode="delta")],
                     {"c1-0": ("delta_apply", "no match")})
    assert s.get_candidate("c1-0")["verdict"] == "invalid"
