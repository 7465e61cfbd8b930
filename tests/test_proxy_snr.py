"""`cenas proxy-snr`: the analysis on data with known variances, the pipeline through the ScoreFn seam,
the ceiling effect from a run store, and (slow) the real thing through the sandbox on digits."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from cenas_jax import theory
from cenas_jax.config import ConfigError, ProxySNRConfig, RunConfig, load_config
from cenas_jax.errors import UserError
from cenas_jax.proxy_snr import analysis, experiment
from cenas_jax.report import proxy_snr as snr_report
from cenas_jax.store import CandidateRow, RunStore

SIGMA2_ARCH = 0.01
SIGMA2_NOISE = 0.0025  # SNR = 4


def _simulate(K, S, T, seed, s2a=SIGMA2_ARCH, s2n=SIGMA2_NOISE, s2t=0.0):
    rng = np.random.default_rng(seed)
    q = rng.normal(0.6, math.sqrt(s2a), K)
    proxy = q[:, None] + rng.normal(0.0, math.sqrt(s2n), (K, S))
    truth = q[:, None] + (rng.normal(0.0, math.sqrt(s2t), (K, T)) if s2t > 0 else np.zeros((K, T)))
    return proxy, truth


# ---------------------------------------------------------------------------
# Analysis on synthetic matrices (no training)
# ---------------------------------------------------------------------------


def test_analysis_recovers_known_variances_and_matches_result_6():
    proxy, truth = _simulate(K=600, S=4, T=1, seed=1)
    a = analysis.analyze([f"a{i}" for i in range(600)], proxy, truth, n_boot=300, seed=3)
    e = a.snr
    assert e.K == 600 and e.S == 4
    assert e.sigma2_arch == pytest.approx(SIGMA2_ARCH, rel=0.15)
    assert e.sigma2_noise == pytest.approx(SIGMA2_NOISE, rel=0.08)
    assert e.snr_ci[0] < 4.0 < e.snr_ci[1]
    # Every number is cenas_jax.theory's on the same matrix.
    ref = theory.estimate_snr(proxy, n_boot=300, seed=3)
    assert (e.sigma2_arch, e.sigma2_noise, e.snr, e.snr_ci) == (ref.sigma2_arch, ref.sigma2_noise, ref.snr, ref.snr_ci)
    rt, ts, tm = (a.comparison(n) for n in ("retest", "truth_single", "truth_mean"))
    assert rt.predicted == theory.predicted_spearman_from_snr(e.snr, kind="retest")
    assert ts.predicted == theory.predicted_spearman_from_snr(e.snr, kind="truth")
    assert tm.predicted == theory.predicted_spearman_from_snr(e.snr, kind="truth", n_seeds=4)
    assert tm.snr_used == pytest.approx(4 * e.snr)
    assert ts.predicted_ci == pytest.approx(tuple(theory.predicted_spearman_from_snr(np.array(e.snr_ci), "truth")))
    assert rt.measured.estimate == theory.spearman(proxy[:, 0], proxy[:, 1], n_boot=300, seed=3).estimate
    assert ts.measured.estimate == theory.spearman(proxy[:, 0], truth[:, 0], n_boot=300, seed=3).estimate
    assert tm.measured.estimate == theory.spearman(proxy.mean(1), truth[:, 0], n_boot=300, seed=3).estimate
    # And the closed form is right on data that follow the model (K = 600: sampling SD of r_S ~ 0.02).
    for name, true_rho in (
        ("retest", theory.predicted_spearman_from_snr(4.0, "retest")),
        ("truth_single", theory.predicted_spearman_from_snr(4.0, "truth")),
        ("truth_mean", theory.predicted_spearman_from_snr(4.0, "truth", n_seeds=4)),
    ):
        c = a.comparison(name)
        assert abs(c.measured.estimate - true_rho) < 0.05, (name, c.measured.estimate, true_rho)
        assert c.measured.ci_low < c.measured.estimate < c.measured.ci_high, name
    assert ts.predicted_noisy_truth is None  # T = 1: the truth's own noise is not estimable


def test_noisy_truth_prediction_uses_both_reliabilities():
    proxy, truth = _simulate(K=800, S=3, T=3, seed=2, s2t=0.01)  # truth SNR = 1 per run, 3 per 3-seed mean
    a = analysis.analyze([str(i) for i in range(800)], proxy, truth, n_boot=0)
    assert a.truth_snr is not None and a.truth_snr.S == 3
    ts = a.comparison("truth_single")
    expected = theory.spearman_from_pearson(
        theory.pearson_from_snr(a.snr.snr, "truth") * theory.pearson_from_snr(a.truth_snr.snr, "truth", n_seeds=3)
    )
    assert ts.predicted_noisy_truth == pytest.approx(expected, abs=1e-12)
    # The attenuated prediction is the one the data follow.
    assert abs(ts.measured.estimate - ts.predicted_noisy_truth) < 0.05
    assert ts.predicted - ts.measured.estimate > 0.03
    assert ts.predicted_ci is None and ts.measured.ci_low != ts.measured.ci_low  # n_boot = 0: no CIs (NaN)
    # The model holds here, so the correction for attenuation finds corr(Q_proxy, Q_truth) = 1.
    assert ts.implied_q_correlation == pytest.approx(1.0, abs=0.06)
    assert ts.measured_pearson == pytest.approx(np.corrcoef(proxy[:, 0], truth.mean(1))[0, 1], abs=1e-12)


def test_a_long_budget_that_reranks_shows_as_an_implied_q_correlation_below_one():
    # Truth quality Q' = 0.6·Q + 0.8·Z: the long budget re-ranks; the proxy's SNR cannot see it.
    rng = np.random.default_rng(8)
    K = 1000
    z1, z2 = rng.standard_normal(K), rng.standard_normal(K)
    q = 0.1 * z1
    proxy = q[:, None] + rng.normal(0, 0.05, (K, 2))
    truth = (0.1 * (0.6 * z1 + 0.8 * z2))[:, None]
    a = analysis.analyze([str(i) for i in range(K)], proxy, truth, n_boot=0)
    ts = a.comparison("truth_single")
    assert ts.implied_q_correlation == pytest.approx(0.6, abs=0.06)
    assert ts.predicted - ts.measured.estimate > 0.25
    assert a.comparison("retest").implied_q_correlation is None


def test_analysis_without_signal_clips_and_predicts_zero():
    rng = np.random.default_rng(5)
    proxy = 0.5 + rng.normal(0, 0.05, (40, 3))  # sigma2_arch = 0
    a = analysis.analyze([str(i) for i in range(40)], proxy, None, n_boot=100)
    assert [c.name for c in a.comparisons] == ["retest"]
    assert a.snr.sigma2_arch >= 0
    assert a.comparison("retest").predicted < 0.1


def test_analysis_reports_undefined_spearman_instead_of_failing():
    proxy = np.array([[0.1, 0.2], [0.1, 0.4], [0.1, 0.3], [0.1, 0.5]])  # seed 0 constant
    a = analysis.analyze(list("abcd"), proxy, None, n_boot=50)
    c = a.comparison("retest")
    assert c.measured is None and "equal" in c.measured_error


@pytest.mark.parametrize(
    "proxy, truth, ids, match",
    [
        (np.ones((4, 1)), None, list("abcd"), "S >= 2"),
        (np.array([[0.1, np.nan]] * 4), None, list("abcd"), "NaN"),
        (np.ones((4, 2)), None, list("abc"), "ids"),
        (np.ones((4, 2)), np.ones((3, 1)), list("abcd"), "truth"),
    ],
)
def test_analysis_rejects_bad_input(proxy, truth, ids, match):
    with pytest.raises(ValueError, match=match):
        analysis.analyze(ids, proxy, truth)


# ---------------------------------------------------------------------------
# The pipeline through the ScoreFn seam (no training)
# ---------------------------------------------------------------------------


class FakeScorer:
    """Scores from the additive model keyed by the architecture id; records every call."""

    def __init__(self, fail_proxy=(), fail_truth=()):
        self.calls = []
        self.fail = {"proxy": set(fail_proxy), "truth": set(fail_truth)}

    def __call__(self, archs, train_cfg, seed):
        self.calls.append(([a.id for a in archs], train_cfg, seed))
        budget = "truth" if train_cfg.epochs >= 2 else "proxy"
        out = []
        for a in archs:
            if a.id in self.fail[budget]:
                out.append(experiment.ArchScores(error="nan: loss became NaN"))
                continue
            q = 0.3 + 0.5 * (zlib.crc32(a.id.encode()) % 1000) / 1000
            rng = np.random.default_rng([zlib.crc32(a.id.encode()), seed])
            noise = 0.0 if budget == "truth" else 0.05
            out.append(experiment.ArchScores(tuple(float(q + noise * rng.standard_normal()) for _ in range(train_cfg.seeds))))
        return out


def _cfg(**proxy):
    base = dict(seeds=3, proxy_epochs=0.5, truth_epochs=4.0, truth_seeds=1, n_boot=200)
    base.update(proxy)
    return RunConfig(seed=7, proxy_snr=ProxySNRConfig(**base))


def test_pipeline_writes_json_and_png_whose_numbers_are_theorys(tmp_path):
    names = ["lenet5", "mlp_small", "vgg_small", "resnet_basic", "mobilenet_v1", "squeezenet", "convmixer", "vit_tiny"]
    cfg = _cfg(architectures=tuple(names))
    scorer = FakeScorer(fail_proxy={"vgg_small"}, fail_truth={"vit_tiny"})
    res = experiment.run_proxy_snr(cfg, tmp_path, progress=False, score_fn=scorer)

    (p_ids, p_cfg, p_seed), (t_ids, t_cfg, t_seed) = scorer.calls
    assert p_ids == names and (p_cfg.epochs, p_cfg.seeds, p_seed) == (0.5, 3, 7)
    assert "vgg_small" not in t_ids and (t_cfg.epochs, t_cfg.seeds, t_seed) == (4.0, 1, 8)
    assert p_cfg.seed_strategy == cfg.train.seed_strategy == "auto"
    assert {(f["id"], f["budget"]) for f in res.failures} == {("vgg_small", "proxy"), ("vit_tiny", "truth")}
    assert res.analysis.ids == tuple(n for n in names if n not in ("vgg_small", "vit_tiny"))

    doc = json.loads(res.json_path.read_text())
    assert res.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    an = doc["analysis"]
    proxy = np.array(an["proxy_scores"])
    truth = np.array(an["truth_scores"])
    assert proxy.shape == (6, 3) and truth.shape == (6, 1)
    ref = theory.estimate_snr(proxy, n_boot=an["n_boot"], ci=an["ci"], seed=an["bootstrap_seed"])
    for key in ("sigma2_arch", "sigma2_noise", "snr", "snr_mean", "msb", "msw"):
        assert experiment.from_json_number(an["snr"][key]) == pytest.approx(getattr(ref, key), rel=1e-12), key
    assert an["snr"]["snr_ci"] == pytest.approx(list(ref.snr_ci), rel=1e-12)
    pairs = {"retest": (proxy[:, 0], proxy[:, 1]), "truth_single": (proxy[:, 0], truth.mean(1)),
             "truth_mean": (proxy.mean(1), truth.mean(1))}
    for name, (x, y) in pairs.items():
        c = an["comparisons"][name]
        m = theory.spearman(x, y, n_boot=an["n_boot"], ci=an["ci"], seed=an["bootstrap_seed"])
        assert c["measured"]["estimate"] == pytest.approx(m.estimate, abs=1e-12)
        assert (c["measured"]["ci_low"], c["measured"]["ci_high"]) == pytest.approx((m.ci_low, m.ci_high), abs=1e-12)
        kind = "retest" if name == "retest" else "truth"
        n = 3 if name == "truth_mean" else 1
        assert c["predicted"] == pytest.approx(theory.predicted_spearman_from_snr(ref.snr, kind, n_seeds=n), abs=1e-12)
    assert doc["config"]["proxy_snr"]["architectures"] == names
    text = snr_report.format_analysis(res.analysis)
    assert "truth_mean" in text and f"{res.analysis.snr.snr:.3g}" in text


def test_pipeline_refuses_too_few_survivors(tmp_path):
    cfg = _cfg(architectures=("lenet5", "mlp_small", "vgg_small", "resnet_basic"))
    with pytest.raises(UserError, match="only 2 architectures.*mlp_small \\(proxy\\): nan"):
        experiment.run_proxy_snr(cfg, tmp_path, progress=False, score_fn=FakeScorer(fail_proxy={"mlp_small", "vgg_small"}))


def test_selection_names_caps_and_errors():
    archs, source = experiment.select_architectures(RunConfig())
    assert source == "corpus" and len(archs) >= 20
    capped, _ = experiment.select_architectures(RunConfig(seed=3, proxy_snr=ProxySNRConfig(max_architectures=5)))
    again, _ = experiment.select_architectures(RunConfig(seed=3, proxy_snr=ProxySNRConfig(max_architectures=5)))
    assert len(capped) == 5 and [a.id for a in capped] == [a.id for a in again]
    assert {a.id for a in capped} <= {a.id for a in archs}
    with pytest.raises(UserError, match="proxy_snr.architectures: unknown corpus entries \\['nope'\\]"):
        experiment.select_architectures(RunConfig(proxy_snr=ProxySNRConfig(architectures=("lenet5", "nope"))))


def test_config_section_is_validated():
    cfg = load_config(None, ["proxy_snr.seeds=4", "proxy_snr.architectures=[lenet5, mlp_small]"])
    assert cfg.proxy_snr.seeds == 4 and cfg.proxy_snr.architectures == ("lenet5", "mlp_small")
    with pytest.raises(ConfigError, match="proxy_snr.seeds"):
        load_config(None, ["proxy_snr.seeds=1"])
    with pytest.raises(ConfigError, match="proxy_snr.truth_epochs"):
        load_config(None, ["proxy_snr.truth_epochs=0"])
    with pytest.raises(ConfigError, match="proxy_snr.nope"):
        load_config(None, ["proxy_snr.nope=1"])


# ---------------------------------------------------------------------------
# (architecture, seed group) tasks
# ---------------------------------------------------------------------------


def test_seed_groups_cover_every_seed_once_in_order():
    assert experiment.seed_groups(5, 2) == [(0, 2), (2, 2), (4, 1)]
    assert experiment.seed_groups(3, 1) == [(0, 1), (1, 1), (2, 1)]
    assert experiment.seed_groups(3, 0) == experiment.seed_groups(3, 3) == experiment.seed_groups(3, 7) == [(0, 3)]


class FakePool:
    """Stands in for ``make_evaluator``'s pool: seed ``s`` of a source scores ``q(source) + 0.01 * s``; a source
    containing "nan-on-seed-3" fails the task holding seed 3. Records every pool it builds and its tasks."""

    built: list = []

    def __init__(self, data_cfg, train_cfg, sandbox_cfg, *, seed=0, eval_split="val"):
        self.train_cfg, self.sandbox_cfg, self.seed, self.tasks = train_cfg, sandbox_cfg, seed, []
        FakePool.built.append(self)

    def evaluate(self, cands, train=True, progress=False):
        from cenas_jax.candidates.records import EvalRecord

        out = []
        for c in cands:
            self.tasks.append(c)
            n = self.train_cfg.seeds if c.seeds is None else c.seeds
            seeds = range(c.seed_offset, c.seed_offset + n)
            if "nan-on-seed-3" in c.source and 3 in seeds:
                out.append(EvalRecord(c.id, "error", "nan", "loss became NaN", "train"))
                continue
            q = 0.3 + 0.4 * (zlib.crc32(c.source.encode()) % 1000) / 1000 + 0.001 * self.train_cfg.epochs
            accs = tuple(q + 0.01 * s for s in seeds)
            out.append(EvalRecord(c.id, "ok", accuracy=float(np.mean(accs)), seed_accuracies=accs))
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_seed_group_tasks_reassemble_into_the_scores_of_one_task(monkeypatch):
    from cenas_jax.candidates import backends
    from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

    monkeypatch.setattr(backends, "make_evaluator", FakePool)
    FakePool.built = []
    archs = [experiment.Arch("a", "# a"), experiment.Arch("b", "# b nan-on-seed-3"), experiment.Arch("c", "# c", "mnist")]
    train = TrainConfig(seeds=5)
    whole = experiment.evaluator_score_fn(DataConfig(), SandboxConfig())(archs, train, 7)
    grouped = experiment.evaluator_score_fn(DataConfig(), SandboxConfig(), seeds_per_task=2)(archs, train, 7)
    one, two = FakePool.built
    assert [(c.id, c.seed_offset, c.seeds) for c in one.tasks] == [("a", 0, None), ("b", 0, None), ("c", 0, None)]
    assert [(c.id, c.seed_offset, c.seeds, c.dataset) for c in two.tasks[:3]] == [
        ("a#seeds0-1", 0, 2, None), ("a#seeds2-3", 2, 2, None), ("a#seeds4-4", 4, 1, None)]
    assert [c.dataset for c in two.tasks[6:]] == ["mnist"] * 3 and two.seed == one.seed == 7
    assert grouped[0] == whole[0] and grouped[2] == whole[2]  # the same five numbers, in seed order
    assert len(whole[0].seed_accuracies) == 5
    assert whole[1].error == "nan: loss became NaN"
    assert grouped[1].error == "nan: loss became NaN (seeds 2..3)" and grouped[1].seed_accuracies == ()


def test_cenas_proxy_snr_goes_through_the_backend_factory_with_seed_groups(tmp_path, monkeypatch):
    """``--set sandbox.backend=ray`` reaches the pool factory, and ``proxy_snr.seeds_per_task`` its tasks."""
    from cenas_jax.candidates import backends
    from cenas_jax.cli import main

    monkeypatch.setattr(backends, "make_evaluator", FakePool)
    FakePool.built = []
    cfg = tmp_path / "c.yaml"
    cfg.write_text("proxy_snr: {architectures: [lenet5, mlp_small, vgg_small, resnet_basic], seeds: 3,"
                   " truth_seeds: 1, n_boot: 50}\n")
    out = tmp_path / "out"
    assert main(["proxy-snr", str(cfg), "--out", str(out), "--no-progress", "--set", "sandbox.backend=ray",
                 "--set", "proxy_snr.seeds_per_task=1"]) == 0
    proxy, truth = FakePool.built
    assert proxy.sandbox_cfg.backend == truth.sandbox_cfg.backend == "ray"
    assert [(c.seed_offset, c.seeds) for c in proxy.tasks[:3]] == [(0, 1), (1, 1), (2, 1)] and len(proxy.tasks) == 12
    assert [(c.seed_offset, c.seeds) for c in truth.tasks] == [(0, None)] * 4  # one truth seed: one task each
    scores = np.array(json.loads((out / experiment.RESULT_JSON).read_text())["analysis"]["proxy_scores"])
    assert scores.shape == (4, 3) and np.allclose(np.diff(scores, axis=1), 0.01)  # seeds 0, 1, 2 in order


def test_a_seed_trained_alone_gives_the_number_it_gives_among_all_seeds():
    """In the sandbox: seeds 0..2 of one architecture as one task, as three tasks of one seed, and seeds 1..2
    as one task give the same accuracies, to the last bit (sequential seeds on CPU)."""
    from cenas_jax.candidates.corpus import load_corpus
    from cenas_jax.candidates.evaluator import Evaluator
    from cenas_jax.candidates.records import Candidate
    from cenas_jax.config import DataConfig, SandboxConfig, TrainConfig

    src = next(e.source for e in load_corpus() if e.name == "mlp_deep_dropout")  # dropout: a key per seed too
    train = TrainConfig(epochs=0.5, batch_size=32, seeds=3)
    sandbox = SandboxConfig(workers=1, timeout_s=120, check_timeout_s=30, memory_mb=3072)
    cands = [Candidate("all", src), *(Candidate(f"s{s}", src, seed_offset=s, seeds=1) for s in range(3)),
             Candidate("s1-2", src, seed_offset=1, seeds=2)]
    with Evaluator(DataConfig(name="digits"), train, sandbox, seed=5) as ev:
        every, *singles, pair = ev.evaluate(cands)
    assert every.ok and len(every.seed_accuracies) == 3 and len(set(every.seed_accuracies)) > 1
    assert tuple(r.seed_accuracies[0] for r in singles) == every.seed_accuracies
    assert pair.seed_accuracies == every.seed_accuracies[1:]


# ---------------------------------------------------------------------------
# The ceiling effect from a run store
# ---------------------------------------------------------------------------


def _make_run(tmp_path: Path, n_seeds: int, per_cycle=8) -> tuple[Path, dict]:
    """A run whose σ²_arch shrinks cycle by cycle (0.02 -> 0.00004) at fixed seed noise."""
    run_dir = tmp_path / "run"
    rng = np.random.default_rng(11)
    truth_scores = {}
    with RunStore(run_dir) as s:
        rid = s.create_run("main")
        for cycle, s2a in zip((-1, 0, 1, 2, 3), (0.02, 0.01, 0.002, 0.0005, 0.00004)):
            q = 0.6 + rng.normal(0, math.sqrt(s2a), per_cycle)
            for i in range(per_cycle):
                cid = f"c{cycle}-{i}"
                s.add_candidate(CandidateRow(id=cid, source=f"# {cid}", run_id=rid, cycle=cycle, idx=i, dataset="digits"))
                seeds = q[i] + rng.normal(0, 0.02, n_seeds)
                s.add_evaluation(cid, {"status": "ok", "accuracy": float(seeds.mean()), "seed_accuracies": seeds.tolist()})
                truth_scores[cid] = seeds
        s.add_candidate(CandidateRow(id="bad", source="# bad", run_id=rid, cycle=0, idx=99, dataset="digits"))
        s.add_evaluation("bad", {"status": "error", "error_kind": "nan", "error_message": "NaN loss"})
    return run_dir, truth_scores


def test_ceiling_effect_from_stored_seed_scores(tmp_path):
    run_dir, stored = _make_run(tmp_path, n_seeds=3)
    cfg = _cfg()

    def no_training(*a):
        raise AssertionError("stored seed scores must be used, not retrained")

    c = experiment.ceiling_effect(run_dir, cfg, score_fn=no_training, progress=False)
    assert c.scores_from == "stored" and c.seeds == 3
    assert [r.cycle for r in c.rows] == [-1, 0, 1, 2, 3] and all(r.K == 8 for r in c.rows)
    for r in c.rows:
        m = np.stack([stored[f"c{r.cycle}-{i}"] for i in range(8)])
        ref = theory.estimate_snr(m, n_boot=cfg.proxy_snr.n_boot, seed=cfg.seed)
        assert r.analysis.snr.sigma2_arch == ref.sigma2_arch and r.analysis.snr.snr == ref.snr
    s2a = [r.analysis.snr.sigma2_arch for r in c.rows]
    assert s2a[0] > s2a[-1] * 10  # the ceiling effect is visible in the estimate
    assert c.sigma2_arch_trend is not None and c.sigma2_arch_trend.s < 0
    pred = [r.analysis.comparison("retest").predicted for r in c.rows]
    assert pred[0] > 0.8 > 0.5 > pred[-1]
    jp, pp = experiment.write_ceiling(c, tmp_path / "out")
    doc = json.loads(jp.read_text())
    assert [r["cycle"] for r in doc["rows"]] == [-1, 0, 1, 2, 3]
    assert pp is not None and pp.read_bytes()[:4] == b"\x89PNG"
    assert "Mann-Kendall" in snr_report.format_ceiling(c)
    combined = snr_report.plot_rho_vs_snr(c.rows[0].analysis, tmp_path / "combined.png", ceiling=c)
    assert combined.read_bytes()[:4] == b"\x89PNG"


def test_ceiling_effect_retrains_when_the_run_kept_one_seed(tmp_path):
    run_dir, _ = _make_run(tmp_path, n_seeds=1, per_cycle=4)
    scorer = FakeScorer(fail_proxy={"c0-1"})
    c = experiment.ceiling_effect(run_dir, _cfg(seeds=2), score_fn=scorer, with_truth=True, progress=False)
    assert c.scores_from == "retrained" and c.seeds == 2
    (ids, pcfg, pseed), (tids, tcfg, tseed) = scorer.calls
    assert len(ids) == 20 and "bad" not in ids and (pcfg.seeds, pcfg.epochs, pseed) == (2, 0.5, 7)
    assert "c0-1" not in tids and (tcfg.epochs, tseed) == (4.0, 8)
    rows = {r.cycle: r for r in c.rows}
    assert rows[0].K == 3 and rows[1].K == 4
    assert rows[1].analysis.comparison("truth_single").measured is not None
    assert c.failures == ({"id": "c0-1", "budget": "proxy", "error": "nan: loss became NaN"},)


def test_cli_argument_errors(tmp_path):
    from cenas_jax.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("proxy_snr: {seeds: 2}\n")
    assert main(["proxy-snr", str(cfg), "--ceiling-only"]) == 2
    assert main(["proxy-snr", str(cfg), "--run", str(tmp_path / "missing")]) == 2
    cfg.write_text("proxy_snr: {seeds: 1}\n")
    assert main(["proxy-snr", str(cfg)]) == 2


# ---------------------------------------------------------------------------
# The real thing: corpus architectures trained in the sandbox on digits
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_through_the_sandbox(tmp_path, capsys):
    """4 corpus architectures x 2 seeds, half an epoch vs one epoch (~90 s on a loaded 2-core CPU)."""
    from cenas_jax.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "data: {name: digits}\nsandbox: {workers: 2}\n"
        "proxy_snr: {architectures: [mlp_small, mlp_deep_dropout, mlp_residual_layernorm, lenet5],"
        " seeds: 2, proxy_epochs: 0.5, truth_epochs: 1.0, n_boot: 100}\n"
    )
    out = tmp_path / "out"
    assert main(["proxy-snr", str(cfg), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "sigma2_arch" in printed and "truth_single" in printed
    doc = json.loads((out / experiment.RESULT_JSON).read_text())
    assert (out / experiment.RESULT_PNG).read_bytes()[:4] == b"\x89PNG"
    an = doc["analysis"]
    proxy = np.array(an["proxy_scores"])
    assert proxy.shape == (4, 2) and np.all((proxy >= 0) & (proxy <= 1))
    assert doc["failures"] == []
    ref = theory.estimate_snr(proxy, n_boot=100, seed=0)
    assert experiment.from_json_number(an["snr"]["sigma2_noise"]) == pytest.approx(ref.sigma2_noise, rel=1e-12)
    assert experiment.from_json_number(an["snr"]["sigma2_arch"]) == pytest.approx(ref.sigma2_arch, rel=1e-12, abs=1e-15)


def test_from_run_uses_the_runs_trained_candidates(tmp_path):
    run_dir, _ = _make_run(tmp_path, n_seeds=1, per_cycle=3)
    cfg = _cfg(from_run=str(run_dir))
    archs, source = experiment.select_architectures(cfg)
    assert source == str(run_dir)
    assert len(archs) == 15 and "bad" not in {a.id for a in archs}  # the failed candidate is not "trained"
    assert {(a.cycle, a.dataset) for a in archs if a.id == "c2-0"} == {(2, "digits")}
    picked, _ = experiment.select_architectures(_cfg(from_run=str(run_dir), architectures=("c1-2", "c3-0", "c-1-1")))
    assert [a.id for a in picked] == ["c1-2", "c3-0", "c-1-1"] and picked[0].source == "# c1-2"
    with pytest.raises(UserError, match="unknown candidates of"):
        experiment.select_architectures(_cfg(from_run=str(run_dir), architectures=("c1-2", "zzz", "c3-0")))
    with pytest.raises(UserError, match="not a run directory"):
        experiment.select_architectures(_cfg(from_run=str(tmp_path / "nowhere")))


def test_json_encoding_of_non_finite_numbers():
    doc = experiment._jsonable({"a": math.inf, "b": math.nan, "c": np.float32(0.5), "d": (1, np.int64(2))})
    assert doc == {"a": "inf", "b": None, "c": 0.5, "d": [1, 2]}
    assert json.dumps(doc)
    assert experiment.from_json_number("inf") == math.inf and math.isnan(experiment.from_json_number(None))
