"""`cenas reproduce`: the plans, the checks of `make reproduce CHECK=1`, running a plan, and the summary
(report/summary_read.py reads it into report/summary.py's numbers, report/summary_render.py writes SUMMARY.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_run import make_run

from cenas_jax import theory
from cenas_jax.cli import main as cenas_main
from cenas_jax.config import load_config
from cenas_jax.report.analysis import analyse
from cenas_jax.report.summary_render import render_markdown
from cenas_jax.reproduce import checks
from cenas_jax.reproduce import execute as ex
from cenas_jax.reproduce import plan as pl

ROOT = Path(__file__).resolve().parents[1]


def cenas(*args: str) -> tuple[int, str, str]:
    """`cenas ARGS` as a subprocess, without DATA_DIR/LLMS from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "LLMS")}
    p = subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=env)
    return p.returncode, p.stdout, p.stderr


def test_check_names_what_is_missing_exits_1_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("LLMS", raising=False)
    monkeypatch.setattr(ex.subprocess, "call", lambda *a, **k: pytest.fail("CHECK must not run anything"))
    rc = cenas_main(["reproduce", "paper", "--check", "--out", str(tmp_path / "rep")])
    text = capsys.readouterr().out
    assert rc == 1
    assert "[MISSING] DATA_DIR" in text and "[MISSING] LLMS" in text
    assert "[MISSING] devices: no GPU/TPU" in text  # this machine has only the CPU
    assert "nothing was run" in text
    assert "--set search.cycles=22 --set search.candidates_per_cycle=50" in text
    assert "GPU-hours" in text and "9,900 generate-and-train steps" in text  # 9 runs x 22 x 50
    assert not (tmp_path / "rep").exists()


def test_cli_help_and_a_missing_data_dir_named_as_the_problem(tmp_path):
    rc, out, err = cenas("reproduce", "--help")
    assert rc == 0 and "small" in out and "paper" in out and "SUMMARY.md" in out
    rc, out, err = cenas("reproduce", "paper", "--help")
    assert rc == 0
    for opt in ("--out", "--data-dir", "--llms", "--check", "--smoke", "--summary-only", "$DATA_DIR", "$LLMS"):
        assert opt in out, opt
    rc, out, err = cenas("reproduce", "small", "--help")
    assert rc == 0 and all(opt in out for opt in ("--out", "--plan", "--summary-only"))
    rc, out, err = cenas("reproduce")
    assert rc == 2 and "SCALE" in err  # which scale: small or paper
    missing = tmp_path / "no-such-data"
    rc, out, err = cenas("reproduce", "paper", "--check", "--out", str(tmp_path / "rep"), "--data-dir", str(missing))
    assert rc == 1
    assert f"[MISSING] DATA_DIR: {missing}: no such directory" in out
    assert out.rstrip().splitlines()[-1].startswith("4 thing(s) missing: DATA_DIR; LLMS; devices; disk")
    assert "nothing was run" in out and not (tmp_path / "rep").exists()


def test_without_the_experiment_configs_the_error_says_what_is_needed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pl, "CONFIGS", tmp_path / "experiments" / "configs")
    assert cenas_main(["reproduce", "small", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "experiment configs of a cenas_jax checkout" in err and str(tmp_path / "experiments" / "configs") in err


def test_paper_plan_covers_three_llms_six_datasets_and_the_smoke_size_is_small(tmp_path):
    plan = pl.paper_plan(tmp_path, ["/m/a", "/m/b", "/m/c"], "/data")
    runs = [s for s in plan.steps if s.kind == "run"]
    assert len(runs) == 9 and sum(s.steps for s in runs) == 9 * 22 * 50
    assert sum(1 for s in runs if s.name.startswith("fig1_convergence-")) == 3  # the paper's 3 x 1,100
    assert {s.name.split("table_proxy_reliability-")[1] for s in plan.steps if s.kind == "proxy_snr"} == set(pl.PAPER_DATASETS)
    for s in runs:  # every run's command line is a loadable config
        cfg = pl.planned_config(s)
        assert cfg.search.cycles == 22 and cfg.data.data_dir == "/data" and len(cfg.search.datasets) == 6
        # A CE pair is a prompt (template + a corpus program, ~1k tokens) + an answer of up to max_new_tokens.
        assert cfg.llm.finetune.max_seq_len >= cfg.llm.sampling.max_new_tokens + 1024
        assert not cfg.search.corpus  # the whole corpus
    lo, hi = pl.STEP_S_PAPER
    assert plan.est_s() >= 9 * 22 * 50 * (lo + hi) / 2
    smoke = pl.paper_plan(tmp_path, ["/m/a", "/m/b"], "/data", smoke=True)
    assert sum(s.steps for s in smoke.steps if s.kind == "run") <= 20 and smoke.est_s() < 3600
    for s in (s for s in smoke.steps if s.kind == "run"):  # a short corpus: the smoke checks the pipeline
        cfg = pl.planned_config(s)
        assert len(cfg.search.corpus) == 6 and cfg.search.cycles == 1


def test_check_llms_accepts_llama_family_and_names_the_problem_otherwise(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}))
    (good / "model.safetensors").write_bytes(b"\0" * 16)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    nocfg = tmp_path / "nocfg"
    nocfg.mkdir()
    found = {c.what: c for c in checks.check_llms([str(good), str(gpt2), str(nocfg), str(tmp_path / "nope")])}
    assert found[f"LLM {good}"].ok and "2 layers" in found[f"LLM {good}"].detail
    assert not found[f"LLM {gpt2}"].ok and "gpt2" in found[f"LLM {gpt2}"].detail
    assert not found[f"LLM {nocfg}"].ok and "config.json" in found[f"LLM {nocfg}"].detail
    assert not found[f"LLM {tmp_path / 'nope'}"].ok
    # The disk estimate follows the checkpoint's shapes: r * (in + out) per projection, fp32, adapter + 2 moments.
    per_layer = 32 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert checks.adapter_bytes(str(good), rank=32) == per_layer * 2 * 4 * 3


def test_check_data_names_each_missing_dataset_with_its_expected_files(tmp_path):
    found = checks.check_data(str(tmp_path), ["cifar10", "mnist"])
    assert found[0].ok
    bad = [c for c in found[1:] if not c.ok]
    assert {c.what for c in bad} == {"dataset cifar10", "dataset mnist"}
    assert all("expected" in c.detail for c in bad)
    assert not checks.check_data(str(tmp_path / "nope"), ["mnist"])[0].ok


def test_small_plan_fits_two_hours_and_has_enough_generations_per_mode():
    plan = pl.small_plan("runs/x")
    names = [s.name for s in plan.steps]
    assert names[:5] == list(pl.RUNS) and "table_proxy_reliability" in names and "retrain" in names
    assert plan.est_s() <= pl.SMALL_BUDGET_S
    # The caps bound the runs; the rest has fixed estimates: the whole plan stays within 2 hours.
    assert sum(pl.SMALL_CAPS_S.values()) + pl.SMALL_PROXY_SNR_S + pl.SMALL_RETRAIN_S + 5 * pl.SMALL_S_LLM_LOAD <= 7200
    fig2 = load_config(ROOT / "experiments/configs/fig2_delta_vs_full.yaml")
    n = fig2.search.cycles * fig2.search.candidates_per_cycle
    per_mode = min(n * fig2.search.delta_share, n * (1 - fig2.search.delta_share))
    assert fig2.search.mode == "mixed" and per_mode >= theory.two_proportion_sample_size(0.713, 0.506) == 87
    cfgs = {r: load_config(ROOT / f"experiments/configs/{r}.yaml") for r in pl.RUNS}
    base = cfgs["fig1_convergence"]
    assert cfgs["ablation_novelty"].search.novelty.enabled is False and base.search.novelty.enabled
    assert cfgs["controls_frozen"].search.ce_update is False and base.search.ce_update
    assert cfgs["controls_mutation"].search.generator == "mutation"
    for r in ("ablation_novelty", "controls_frozen", "controls_mutation"):  # one switch changed, same budget
        c = cfgs[r].search
        assert (c.cycles, c.candidates_per_cycle, c.mode, c.corpus) == (base.search.cycles, base.search.candidates_per_cycle,
                                                                       base.search.mode, base.search.corpus)
        assert cfgs[r].train == base.train and cfgs[r].llm == base.llm


def _fake_proxy_snr(out: Path, run: Path) -> None:
    """proxy_snr's library with a stand-in scorer (known variances): the table and the ceiling effect of ``run``."""
    from cenas_jax.proxy_snr import experiment as ps

    cfg = load_config(ROOT / "experiments/configs/table_proxy_reliability.yaml", ["proxy_snr.n_boot=100"])
    rng = np.random.default_rng(0)
    q = {}

    def scorer(archs, train_cfg, seed):
        out_ = []
        for a in archs:
            q.setdefault(a.id, rng.normal(0.6, 0.1))
            out_.append(ps.ArchScores(tuple(float(np.clip(q[a.id] + rng.normal(0, 0.03), 0, 1))
                                            for _ in range(train_cfg.seeds))))
        return out_

    ps.run_proxy_snr(cfg, out, progress=False, score_fn=scorer)
    ps.write_ceiling(ps.ceiling_effect(run, cfg, score_fn=scorer, progress=False), out)


@pytest.fixture(scope="module")
def small_outputs(tmp_path_factory):
    """A reproduce-small output directory with synthetic runs, a proxy-snr table and a retrain; no mutation control."""
    from cenas_jax.candidates.records import EvalRecord
    from cenas_jax.retrain import retrain, write_json

    out = tmp_path_factory.mktemp("reproduce") / "rs"
    make_run(out / "fig2_delta_vs_full", cycles=3, per_cycle=20, rate={"full": 0.5, "delta": 0.75}, seed=1)
    make_run(out / "fig1_convergence", cycles=4, per_cycle=10, slope=0.05, seed=2)
    make_run(out / "ablation_novelty", cycles=4, per_cycle=10, novelty=False, seed=3)
    make_run(out / "controls_frozen", cycles=4, per_cycle=10, slope=0.0, overrides={"search.ce_update": False}, seed=4)
    # controls_mutation not run: the summary says so and goes on.
    _fake_proxy_snr(out / "table_proxy_reliability", out / "fig1_convergence")

    class Ev:
        def __init__(self, *a):
            pass

        def evaluate_iter(self, cands, train=True):
            for i, c in enumerate(cands):
                yield EvalRecord(c.id, "ok", accuracy=0.95 - 0.02 * i, seed_accuracies=(0.95 - 0.02 * i,))

        def close(self):
            pass

    res = retrain(out / "fig1_convergence", top=5, epochs=10, evaluator_factory=Ev, n_boot=100, echo=lambda s: None)
    write_json(res, out / "retrain-10ep.json")
    return out, res


def test_summary_reads_synthetic_runs_and_puts_them_beside_the_papers_numbers(small_outputs, monkeypatch, capsys):
    out, res = small_outputs
    s = ex.summary(pl.small_plan(out))

    fig2 = analyse(out / "fig2_delta_vs_full")
    d, f = fig2.modes["delta"], fig2.modes["full"]
    t2 = s.fig2
    assert (t2.delta.rate, t2.delta.low, t2.delta.high, t2.delta.n) == (d["rate"], d["low"], d["high"], d["generated"])
    assert (t2.full.rate, t2.full.low, t2.full.high, t2.full.n) == (f["rate"], f["low"], f["high"], f["generated"])
    assert (t2.paper_r_delta, t2.paper_r_full, t2.paper_ratio, t2.paper_ratio_calibrated) == (0.713, 0.506, 1.41, 2.23)
    assert (t2.ratio, t2.ratio_low, t2.ratio_high) == theory.rate_ratio_ci(d["valid"], d["generated"], f["valid"],
                                                                           f["generated"])
    assert t2.markov_ratio == fig2.markov["predicted_ratio"] and t2.eps_hat == fig2.markov["eps_hat"]
    late = sorted(d["per_cycle"])[1:]  # 3 cycles: the later half is cycles 1-2
    kd, nd = (sum(d["per_cycle"][c][k] for c in late) for k in ("valid", "n"))
    kf, nf = (sum(f["per_cycle"][c][k] for c in late) for k in ("valid", "n"))
    assert (t2.late.first, t2.late.last, t2.late.delta_valid, t2.late.delta_n, t2.late.full_valid, t2.late.full_n) == \
        (1, 2, kd, nd, kf, nf)
    assert t2.late.ratio == pytest.approx((kd / nd) / (kf / nf), rel=1e-12)
    assert t2.apply_share == fig2.markov["apply_share_of_delta_failures"]
    assert (t2.apply_failures, t2.delta_failures) == (d["apply_failures"], d["failures"])
    assert t2.needed_per_mode == 87
    assert [(r.cycle, r.delta.valid, r.delta.n, r.full.valid, r.full.n) for r in t2.rows] == \
        [(c, d["per_cycle"][c]["valid"], d["per_cycle"][c]["n"], f["per_cycle"][c]["valid"], f["per_cycle"][c]["n"])
         for c in sorted(d["per_cycle"])]

    fig1 = analyse(out / "fig1_convergence")
    assert s.fig1.trend == fig1.trend and s.fig1.trend.s == fig1.trend.s
    c0, r0 = fig1.cycles[0], s.fig1.rows[0]
    assert (r0.cycle, r0.generated, r0.trained, r0.mean_q, r0.q_low, r0.q_high) == \
        (0, c0.generated, c0.trained, c0.mean_q, c0.q_low, c0.q_high)
    assert s.fig1.elite.mass == tuple(float(x) for x in fig1.elite_check.mass)
    assert s.fig1.elite.bound == tuple(float(x) for x in fig1.elite_check.bound)
    assert (s.fig1.paper_cycles, s.fig1.paper_architectures) == (22, 3300)
    assert s.verdicts.accepted == (("fig1_convergence", tuple(c.accepted for c in fig1.cycles)),
                                   ("fig2_delta_vs_full", tuple(c.accepted for c in fig2.cycles)))
    assert [run for run, _ in s.verdicts.trends] == ["fig1_convergence", "fig2_delta_vs_full"]
    assert s.verdicts.ratio_measured == fig2.markov["measured_ratio"]

    abl = analyse(out / "ablation_novelty")
    r1 = next(r for r in s.ablation.rows if r.cycle == 1)
    assert (r1.with_similarity, r1.with_duplicates, r1.without_similarity, r1.without_accepted) == \
        (fig1.cycles[1].diversity, fig1.cycles[1].duplicates, abl.cycles[1].diversity, abl.cycles[1].accepted)
    assert s.verdicts.ablation_run and s.verdicts.similarity_without == s.ablation.mean_without
    # The mutation control is absent: the controls compare the CE run with the frozen LLM only.
    assert [r.label for r in s.controls.runs] == ["CE (fig1_convergence)", "LLM frozen (controls_frozen)"]
    frozen = analyse(out / "controls_frozen")
    assert [p.mean_q for p in s.controls.runs[1].per_cycle] == [c.mean_q for c in frozen.cycles]
    status = {r.name: r for r in s.runs}
    assert list(status) == list(pl.RUNS)
    m = status["controls_mutation"]
    assert (m.status, m.cycles_done, m.cycles_planned, m.generations) == ("not run", 0, 6, None)
    assert (status["fig1_convergence"].status, status["fig1_convergence"].cycles_done,
            status["fig1_convergence"].generations) == ("finished", 4, 40)

    psnr = json.loads((out / "table_proxy_reliability/proxy_snr.json").read_text())["analysis"]
    assert s.proxy.snr == float(psnr["snr"]["snr"]) and s.proxy.architectures == len(psnr["ids"])
    ts = s.proxy.comparison("truth_single")
    assert ts.paper_spearman == 0.635
    assert ts.measured == float(psnr["comparisons"]["truth_single"]["measured"]["estimate"])
    assert s.verdicts.rho_measured == ts.measured and s.verdicts.snr == s.proxy.snr
    ceiling = json.loads((out / "table_proxy_reliability/ceiling.json").read_text())
    row = next(r for r in ceiling["rows"] if r["cycle"] == 1 and r["analysis"])
    c1 = next(r for r in s.proxy.ceiling.rows if r.cycle == 1)
    assert (c1.k, c1.sigma2_arch) == (row["K"], float(row["analysis"]["snr"]["sigma2_arch"]))
    assert s.retrain.spearman == res.spearman.estimate and s.retrain.paper_spearman == 0.926
    assert (s.retrain.retrained, s.retrain.best_accuracy) == (len(res.rows), 0.95)
    # Figure 1's diagnostics for the Figure 2 run too (a CE run with more generations per cycle).
    f0 = fig2.cycles[0]
    assert s.fig2_convergence.run == "fig2_delta_vs_full" and s.fig2_convergence.trend == fig2.trend
    assert (s.fig2_convergence.rows[0].generated, s.fig2_convergence.rows[0].mean_q) == (f0.generated, f0.mean_q)
    assert s.per_llm is None  # a small plan has one LLM
    assert s.wall_time.logged == 0 and s.wall_time.rows == ()

    # The command writes SUMMARY.md and the figures it links, and runs nothing with --summary-only.
    monkeypatch.setattr(ex.subprocess, "call", lambda *a, **k: pytest.fail("--summary-only must not run anything"))
    assert cenas_main(["reproduce", "small", "--summary-only", "--out", str(out)]) == 0
    assert f"wrote {out / 'SUMMARY.md'}" in capsys.readouterr().out
    text = (out / "SUMMARY.md").read_text()
    for fig in ("convergence_fig1_convergence.png", "convergence_fig2_delta_vs_full.png", "fig2_delta_vs_full.png",
                "ablation_novelty.png", "controls.png", "table_proxy_reliability.png", "ceiling_effect.png"):
        assert (out / "figures" / fig).stat().st_size > 1000 and f"(figures/{fig})" in text


def test_the_markdown_shows_the_summarys_numbers(small_outputs):
    out, _ = small_outputs
    s = ex.summary(pl.small_plan(out))
    text = render_markdown(s, {"fig2_delta_vs_full": "figures/fig2_delta_vs_full.png"})
    d, f = s.fig2.delta, s.fig2.full
    assert f"| r_δ (delta valid rate) | {d.rate:.3f} [{d.low:.3f}, {d.high:.3f}], n = {d.n} | 0.713 |" in text
    assert f"| r_full (full-code valid rate) | {f.rate:.3f} [{f.low:.3f}, {f.high:.3f}], n = {f.n} | 0.506 |" in text
    assert f"| r_δ / r_full measured | {s.fig2.ratio:.2f} [{s.fig2.ratio_low:.2f}, {s.fig2.ratio_high:.2f}] | 1.41 |" in text
    x = s.fig2.late
    assert f"| cycles 1–2 only: r_δ / r_full | {x.delta_valid}/{x.delta_n} = {x.delta_valid / x.delta_n:.3f} vs " \
           f"{x.full_valid}/{x.full_n} = {x.full_valid / x.full_n:.3f}, ratio {x.ratio:.2f} |" in text
    t, r0 = s.fig1.trend, s.fig1.rows[0]
    assert f"S = {t.s}, one-sided p(increasing) = {t.p_increasing:.3g}" in text
    assert f"| 0 | {r0.generated} | {r0.trained} | {r0.mean_q:.3f} [{r0.q_low:.3f}, {r0.q_high:.3f}]" in text
    assert "3,300 architectures" in text and "22 cycles" in text
    verdict = next(x for x in text.splitlines() if x.startswith("| persistent novel admissions"))
    (n1, a1), (n2, a2) = s.verdicts.accepted
    assert f"{n1}: accepted per cycle {list(a1)}; {n2}: accepted per cycle {list(a2)}" in verdict
    assert "| controls_mutation | " in text and "| not run | 0 / 6 |" in text
    assert f"| SNR (one run) | {s.proxy.snr:.2f}" in text
    assert f"Spearman ρ_S [95% CI] | {s.retrain.spearman:.3f}" in text and "| 0.926 |" in text
    assert "](figures/fig2_delta_vs_full.png)" in text and "figures/controls.png" not in text  # only what was drawn
    assert "No step log" in text


def test_makefile_targets_call_the_entry_point():
    small = subprocess.run(["make", "-n", "reproduce-small"], cwd=ROOT, capture_output=True, text=True)
    assert ".venv/bin/cenas reproduce small --out runs/reproduce-small" in small.stdout
    check = subprocess.run(["make", "-n", "reproduce", "CHECK=1", "DATA_DIR=/d", "LLMS=/a /b"], cwd=ROOT,
                           capture_output=True, text=True)
    assert '.venv/bin/cenas reproduce paper --out runs/reproduce --check  --data-dir "/d" --llms "/a /b"' in check.stdout
    smoke = subprocess.run(["make", "-n", "reproduce", "SMOKE=1"], cwd=ROOT, capture_output=True, text=True)
    assert "--smoke" in smoke.stdout and "--check" not in smoke.stdout


def test_execute_skips_finished_steps_resumes_interrupted_runs_and_runs_the_rest(tmp_path, monkeypatch):
    from cenas_jax.rundir import LoopState, RunDir

    out = tmp_path / "rs"
    plan = pl.small_plan(out)
    make_run(out / "fig2_delta_vs_full", cycles=1, per_cycle=4)  # finished
    make_run(out / "fig1_convergence", cycles=2, per_cycle=4)
    RunDir(out / "fig1_convergence").save_state(LoopState(cycle=1, phase="train", status="interrupted"))
    calls: list[list[str]] = []
    monkeypatch.setattr(ex.subprocess, "call", lambda cmd, **k: calls.append(cmd[3:]) or 0)
    failed = ex.execute(plan, echo=lambda s: None)
    assert failed == 0
    firsts = [(c[0], c[1]) for c in calls]
    assert ("run", str(pl.CONFIGS / "fig2_delta_vs_full.yaml")) not in firsts  # finished: skipped
    assert calls[0] == ["resume", str(out / "fig1_convergence"), "--no-progress"]
    assert calls[1][:2] == ["run", str(pl.CONFIGS / "ablation_novelty.yaml")]
    assert "search.max_wall_s=1020" in calls[1]
    assert [c[0] for c in calls[:6]] == ["resume", "run", "run", "run", "proxy-snr", "retrain"]
    assert calls[4][calls[4].index("--run") + 1] == str(out / "fig1_convergence")
    # Reports only for runs whose store exists (here the two synthetic ones; the fake runs wrote nothing).
    assert [c for c in calls if c[0] == "report"] == [["report", str(out / "fig2_delta_vs_full")],
                                                       ["report", str(out / "fig1_convergence")]]
    # Every executed step is logged with its wall time; the summary sums them against the 2-hour budget.
    recs = [json.loads(x) for x in (out / ex.STEP_LOG).read_text().splitlines()]
    assert len(recs) == len(calls) and [r["args"] for r in recs] == calls
    assert recs[0]["step"] == "fig1_convergence" and all(r["rc"] == 0 and r["seconds"] >= 0 for r in recs)
    with open(out / ex.STEP_LOG, "a") as f:  # a resumed attempt of fig1 and a line cut short by a kill
        f.write(json.dumps({**recs[0], "seconds": 7300.0, "rc": 1}) + "\n" + '{"step": "retr')
    w = ex.summary(plan).wall_time
    assert w.logged == len(recs) + 1  # the cut line is skipped
    fig1 = next(r for r in w.rows if r.step == "fig1_convergence")
    assert (fig1.executions, fig1.exit_codes) == (2, (0, 1)) and fig1.seconds == recs[0]["seconds"] + 7300.0
    assert [r.step for r in w.rows] == [s.name for s in plan.steps if any(x["step"] == s.name for x in recs)]
    assert w.total_s == sum(r["seconds"] for r in recs) + 7300.0 and w.budget_s == 7200
    assert w.within_budget is False and w.first_started == recs[0]["started"]
    wall = ex.write_summary(plan).read_text().split("## Wall time")[1].split("\n## ")[0]
    assert "| fig1_convergence | 2 | 2.0 h | " in wall and "0, 1 |" in wall
    assert "OVER budget" in wall and "within budget" not in wall


def test_paper_summary_has_a_row_per_llm_beside_the_delta_papers(tmp_path):
    plan = pl.paper_plan(tmp_path, ["/m/a", "/m/b"], "/d")
    make_run(tmp_path / "fig1_convergence-llm1", cycles=2, per_cycle=6, mode="delta", seed=5)
    s = ex.summary(plan)
    a = analyse(tmp_path / "fig1_convergence-llm1")
    d = a.modes["delta"]
    (ra, rb) = s.per_llm.rows
    assert (ra.llm, ra.run, ra.delta.rate, ra.delta.low, ra.delta.high) == \
        ("/m/a", "fig1_convergence-llm1", d["rate"], d["low"], d["high"])
    assert ra.best_accuracy == max(b["accuracy"] for b in a.best if b.get("accuracy") is not None)
    assert (rb.llm, rb.delta, rb.mean_q) == ("/m/b", None, None)  # not run
    assert ("DeepSeek-Coder-7B-Instruct", 0.753, 0.658) in s.per_llm.paper
    assert s.scale == "paper scale." and "fig2_delta_vs_full-llm2" in [r.name for r in s.runs]
    # LLM 1's run stands for Figure 1 at paper scale.
    assert s.fig1 is not None and s.fig1.rows[0].generated == 6
    text = ex.write_summary(plan).read_text()
    assert f"| `/m/a` (ours) | {d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] |" in text
    assert "| `/m/b` (ours) | not run |" in text and "| DeepSeek-Coder-7B-Instruct (paper) | 0.753 | 0.658 |" in text


def test_a_failed_step_makes_the_exit_code_1_and_the_summary_is_still_written(tmp_path, monkeypatch, capsys):
    out = tmp_path / "rs"
    # proxy-snr fails; every other step "succeeds" without writing anything.
    monkeypatch.setattr(ex.subprocess, "call", lambda cmd, **k: 1 if cmd[3] == "proxy-snr" else 0)
    assert cenas_main(["reproduce", "small", "--out", str(out)]) == 1
    assert "2 step(s) failed" in capsys.readouterr().out  # proxy-snr, and retrain (fig1 wrote no store)
    assert (out / "SUMMARY.md").is_file()
    w = ex.summary(pl.small_plan(out)).wall_time
    psnr = next(r for r in w.rows if r.step == "table_proxy_reliability")
    assert (psnr.executions, psnr.exit_codes) == (1, (1,))
    assert "retrain" not in [r.step for r in w.rows]  # skipped (no run store): counted as failed, never run
    monkeypatch.setattr(ex.subprocess, "call", lambda cmd, **k: pytest.fail("--summary-only runs nothing"))
    assert cenas_main(["reproduce", "small", "--out", str(out), "--summary-only"]) == 0
