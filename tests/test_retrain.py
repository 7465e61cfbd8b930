"""`cenas retrain`: the best candidates of a run retrained at a long budget, scored on the test split."""

from __future__ import annotations

import zlib

import pytest
from programs import mlp

from cenas_jax.candidates.evaluator import Evaluator
from cenas_jax.candidates.records import Candidate
from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

MLP = mlp(32)


def _sandbox() -> SandboxConfig:
    return SandboxConfig(workers=1, timeout_s=60, check_timeout_s=15, memory_mb=3072, max_params=200_000)


def test_evaluator_scores_on_the_test_split_when_asked():
    """eval_split="test": the worker gets the test arrays and its accuracy is the in-process test accuracy."""
    import jax

    from cenas_jax.candidates.contract import build_net
    from cenas_jax.data import load_dataset
    from cenas_jax.train import train_candidate

    tcfg = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="eval_split"):
        Evaluator(DataConfig(name="digits"), tcfg, _sandbox(), eval_split="train")
    with Evaluator(DataConfig(name="digits"), tcfg, _sandbox(), seed=5, eval_split="test") as ev:
        (rec,) = ev.evaluate([Candidate("mlp", MLP)], train=True)
    assert rec.status == "ok", rec.error_message
    ds = load_dataset(DataConfig(name="digits"))
    built = build_net(MLP, 10)
    key = jax.random.fold_in(jax.random.PRNGKey(5), zlib.crc32(MLP.encode()) & 0x7FFFFFFF)
    cfg = TrainConfig(epochs=1, batch_size=32, compile_cache=False)
    test = train_candidate(built.module, built.takes_train, ds, cfg, key, eval_split="test")
    val = train_candidate(built.module, built.takes_train, ds, cfg, key, eval_split="val")
    assert abs(rec.accuracy - test.accuracy) <= 2 / len(ds.y_test)  # one thread vs many may flip a prediction
    assert test.accuracy != val.accuracy  # the two splits differ, so the check above tells them apart


# ---------------------------------------------------------------------------- the retrain library and CLI

import json  # noqa: E402 - this section's imports, kept beside the tests that use them

from synthetic_run import make_run  # noqa: E402 - this section's imports, kept beside the tests that use them

from cenas_jax.errors import UserError  # noqa: E402 - this section's imports, kept beside the tests that use them
from cenas_jax.retrain import REFERENCE_SPEARMAN, budget_label, format_result, retrain, select_top, write_json  # noqa: E402 - this section's imports, kept beside the tests that use them
from cenas_jax.store import RunStore  # noqa: E402 - this section's imports, kept beside the tests that use them


def test_select_top_orders_by_proxy_quality_and_skips_repeated_sources(tmp_path):
    run = make_run(tmp_path / "run", cycles=2, per_cycle=6)
    with RunStore(run, create=False) as st:
        rid = st.get_run("main")["id"]
        top = select_top(st, rid, 4)
        qs = [r["quality"] for r in top]
        assert len(top) == 4 and qs == sorted(qs, reverse=True)
        everything = [r["quality"] for r in st.candidates(run_id=rid) if r["quality"] is not None and r["cycle"] >= 0]
        assert qs[0] == max(everything)
        assert len({r["source_hash"] for r in top}) == 4
        with_corpus = select_top(st, rid, 4, include_corpus=True)
        assert [r["id"] for r in with_corpus[:4]] == [r["id"] for r in top]
        assert {r["id"] for r in with_corpus[4:]} == {"L-digits-mlp_a", "L-digits-mlp_b", "L-digits-mlp_c"}


@pytest.mark.slow
def test_retrain_stores_test_split_evaluations_reports_spearman_and_skips_done_work(tmp_path, capsys):
    """Real sandbox, digits, 2 epochs: stored under retrain-2ep/test, a table, a JSON, a rerun trains nothing."""
    run = make_run(tmp_path / "run", cycles=2, per_cycle=6,
                   overrides={"sandbox.workers": 1, "sandbox.timeout_s": 300, "train.batch_size": 64})
    res = retrain(run, top=4, epochs=2, n_boot=200, echo=lambda s: None)
    assert res.budget == "retrain-2ep" == budget_label(2.0) and res.epochs == 2.0 and res.proxy_epochs == 0.5
    assert len(res.rows) == 4 and all(r.status == "ok" for r in res.rows), [r.error for r in res.rows]
    assert all(0.5 < r.test_accuracy <= 1.0 for r in res.rows)  # MLPs on digits after 2 epochs: well above 0.1
    assert all(r.test_quality == pytest.approx(r.test_accuracy / 0.7) for r in res.rows)
    assert res.spearman is not None and res.spearman.n == 4 and -1 <= res.spearman.estimate <= 1
    assert res.kendall is not None
    with RunStore(run, create=False) as st:
        evs = [e for e in st.evaluations(budget="retrain-2ep")]
        assert len(evs) == 4 and {e["split"] for e in evs} == {"test"}
        assert {e["candidate_id"] for e in evs} == {r.candidate_id for r in res.rows}
        assert all(len(e["seed_accuracies"]) == 1 for e in evs)

    def must_not_train(*a, **k):
        raise AssertionError("everything is stored: nothing should be retrained")

    again = retrain(run, top=4, epochs=2, n_boot=200, evaluator_factory=must_not_train, echo=lambda s: None)
    assert [r.test_accuracy for r in again.rows] == [r.test_accuracy for r in res.rows]
    assert again.spearman.estimate == pytest.approx(res.spearman.estimate)

    text = format_result(res)
    assert "Spearman" in text and f"{REFERENCE_SPEARMAN:.3f}" in text and res.rows[0].candidate_id in text
    data = json.loads(write_json(res, tmp_path / "r.json").read_text())
    assert data["split"] == "test" and data["reference"]["spearman"] == 0.926 and len(data["rows"]) == 4
    assert data["spearman"]["estimate"] == pytest.approx(res.spearman.estimate)


def test_retrain_with_a_scripted_evaluator_computes_the_correlation_of_the_two_budgets(tmp_path):
    """A stand-in evaluator whose test accuracy is a known function of the proxy: ρ_S is exactly 1, or −1."""
    from cenas_jax.candidates.records import EvalRecord

    run = make_run(tmp_path / "run", cycles=2, per_cycle=8)
    with RunStore(run, create=False) as st:
        acc_of = {r["id"]: r["quality"] for r in st.candidates() if r["quality"] is not None}

    def factory(sign, epochs):
        class Ev:
            def __init__(self, data_cfg, train_cfg, sandbox_cfg, seed):
                assert train_cfg.epochs == epochs and train_cfg.seeds == 2
                assert sandbox_cfg.timeout_s == pytest.approx(300 * epochs / 0.5 * 2)  # scaled with the budget

            def evaluate_iter(self, cands, train=True):
                for c in cands:
                    a = 0.5 + sign * 0.2 * (acc_of[c.id] - 0.8)
                    yield EvalRecord(c.id, "ok", accuracy=a, seed_accuracies=(a, a), params=10)

            def close(self):
                pass

        return Ev

    up = retrain(run, top=5, epochs=7, seeds=2, evaluator_factory=factory(+1, 7), n_boot=100, echo=lambda s: None)
    assert up.spearman.estimate == pytest.approx(1.0) and up.kendall.estimate == pytest.approx(1.0)
    assert up.spearman.ci_low == pytest.approx(1.0)  # every bootstrap resample is perfectly ordered too
    down = retrain(run, top=5, epochs=8, seeds=2, evaluator_factory=factory(-1, 8), n_boot=100, echo=lambda s: None)
    assert down.spearman.estimate == pytest.approx(-1.0)
    assert [r.candidate_id for r in down.rows] == [r.candidate_id for r in up.rows]


def test_bad_input_is_a_user_error(tmp_path):
    run = make_run(tmp_path / "run", cycles=1, per_cycle=4)
    for kw, msg in (({"top": 0, "epochs": 5}, "--top"), ({"top": 3, "epochs": 0}, "--epochs"),
                    ({"top": 3, "epochs": 5, "seeds": 0}, "--seeds")):
        with pytest.raises(UserError, match=msg):
            retrain(run, **kw)
    with pytest.raises(UserError, match="not a run directory"):
        retrain(tmp_path / "nowhere", top=3, epochs=5)


def test_cli_retrain_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    from cenas_jax import retrain as retrain_mod
    from cenas_jax.candidates.records import EvalRecord
    from cenas_jax.cli import main

    run = make_run(tmp_path / "run", cycles=2, per_cycle=8)

    class Ev:
        def __init__(self, *a):
            pass

        def evaluate_iter(self, cands, train=True):
            for i, c in enumerate(cands):
                yield EvalRecord(c.id, "ok", accuracy=0.9 - 0.01 * i, seed_accuracies=(0.9 - 0.01 * i,))

        def close(self):
            pass

    monkeypatch.setattr(retrain_mod, "_default_evaluator", Ev)
    assert main(["retrain", str(run), "--top", "4", "--epochs", "3", "--no-progress", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "test acc" in out and "Spearman" in out and "0.926" in out
    data = json.loads((run / "retrain-3ep.json").read_text())
    assert len(data["rows"]) == 4 and data["budget"] == "retrain-3ep"
    assert main(["retrain", str(tmp_path / "missing"), "--epochs", "3"]) == 2
