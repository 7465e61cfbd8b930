"""experiments/reproduce.py: the plans, the checks of `make reproduce CHECK=1`, and the summary writer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_run import make_run

from cenas_jax import theory
from cenas_jax.config import load_config
from cenas_jax.report.analysis import analyse

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod
    spec.loader.exec_module(mod)
    return mod


rp = _load()


def test_check_names_what_is_missing_exits_1_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("LLMS", raising=False)
    monkeypatch.setattr(rp.subprocess, "call", lambda *a, **k: pytest.fail("CHECK must not run anything"))
    out: list[str] = []
    rc = rp.main(["paper", "--check", "--out", str(tmp_path / "rep")], echo=out.append)
    text = "\n".join(out)
    assert rc == 1
    assert "[MISSING] DATA_DIR" in text and "[MISSING] LLMS" in text
    assert "[MISSING] devices: no GPU/TPU" in text  # this machine has only the CPU
    assert "nothing was run" in text
    assert "--set search.cycles=22 --set search.candidates_per_cycle=50" in text
    assert "GPU-hours" in text and "9,900 generate-and-train steps" in text  # 9 runs x 22 x 50
    assert not (tmp_path / "rep").exists()


def test_paper_plan_covers_three_llms_six_datasets_and_the_smoke_size_is_small(tmp_path):
    plan = rp.paper_plan(tmp_path, ["/m/a", "/m/b", "/m/c"], "/data")
    runs = [s for s in plan.steps if s.kind == "run"]
    assert len(runs) == 9 and sum(s.steps for s in runs) == 9 * 22 * 50
    assert sum(1 for s in runs if s.name.startswith("fig1_convergence-")) == 3  # the paper's 3 x 1,100
    assert {s.name.split("table_proxy_reliability-")[1] for s in plan.steps if s.kind == "proxy_snr"} == set(rp.PAPER_DATASETS)
    for s in runs:  # every run's command line is a loadable config
        cfg = rp._planned_config(s)
        assert cfg.search.cycles == 22 and cfg.data.data_dir == "/data" and len(cfg.search.datasets) == 6
        # A CE pair is a prompt (template + a corpus program, ~1k tokens) + an answer of up to max_new_tokens.
        assert cfg.llm.finetune.max_seq_len >= cfg.llm.sampling.max_new_tokens + 1024
        assert not cfg.search.corpus  # the whole corpus
    lo, hi = rp.STEP_S_PAPER
    assert plan.est_s() >= 9 * 22 * 50 * (lo + hi) / 2
    smoke = rp.paper_plan(tmp_path, ["/m/a", "/m/b"], "/data", smoke=True)
    assert sum(s.steps for s in smoke.steps if s.kind == "run") <= 20 and smoke.est_s() < 3600
    for s in (s for s in smoke.steps if s.kind == "run"):  # a short corpus: the smoke checks the pipeline
        cfg = rp._planned_config(s)
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
    checks = {c.what: c for c in rp.check_llms([str(good), str(gpt2), str(nocfg), str(tmp_path / "nope")])}
    assert checks[f"LLM {good}"].ok and "2 layers" in checks[f"LLM {good}"].detail
    assert not checks[f"LLM {gpt2}"].ok and "gpt2" in checks[f"LLM {gpt2}"].detail
    assert not checks[f"LLM {nocfg}"].ok and "config.json" in checks[f"LLM {nocfg}"].detail
    assert not checks[f"LLM {tmp_path / 'nope'}"].ok
    # The disk estimate follows the checkpoint's shapes: r * (in + out) per projection, fp32, adapter + 2 moments.
    per_layer = 32 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert rp.adapter_bytes(str(good), rank=32) == per_layer * 2 * 4 * 3


def test_check_data_names_each_missing_dataset_with_its_expected_files(tmp_path):
    checks = rp.check_data(str(tmp_path), ["cifar10", "mnist"])
    assert checks[0].ok
    bad = [c for c in checks[1:] if not c.ok]
    assert {c.what for c in bad} == {"dataset cifar10", "dataset mnist"}
    assert all("expected" in c.detail for c in bad)
    assert not rp.check_data(str(tmp_path / "nope"), ["mnist"])[0].ok


def test_small_plan_fits_two_hours_and_has_enough_generations_per_mode():
    plan = rp.small_plan("runs/x")
    names = [s.name for s in plan.steps]
    assert names[:5] == list(rp.RUNS) and "table_proxy_reliability" in names and "retrain" in names
    assert plan.est_s() <= rp.SMALL_BUDGET_S
    # The caps bound the runs; the rest has fixed estimates: the whole plan stays within 2 hours.
    assert sum(rp.SMALL_CAPS_S.values()) + rp.SMALL_PROXY_SNR_S + rp.SMALL_RETRAIN_S + 5 * rp.SMALL_S_LLM_LOAD <= 7200
    fig2 = load_config(ROOT / "experiments/configs/fig2_delta_vs_full.yaml")
    n = fig2.search.cycles * fig2.search.candidates_per_cycle
    per_mode = min(n * fig2.search.delta_share, n * (1 - fig2.search.delta_share))
    assert fig2.search.mode == "mixed" and per_mode >= theory.two_proportion_sample_size(0.713, 0.506) == 87
    cfgs = {r: load_config(ROOT / f"experiments/configs/{r}.yaml") for r in rp.RUNS}
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


def test_summary_reads_synthetic_runs_and_puts_them_beside_the_papers_numbers(tmp_path, monkeypatch):
    from cenas_jax.candidates.records import EvalRecord
    from cenas_jax.retrain import retrain, write_json

    out = tmp_path / "rs"
    rp.small_plan(out)
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
    monkeypatch.setattr(rp.subprocess, "call", lambda *a, **k: pytest.fail("--summary-only must not run anything"))
    lines: list[str] = []
    assert rp.main(["small", "--summary-only", "--out", str(out)], echo=lines.append) == 0
    text = (out / "SUMMARY.md").read_text()

    fig2 = analyse(out / "fig2_delta_vs_full")
    d, f = fig2.modes["delta"], fig2.modes["full"]
    assert f"| r_δ (delta valid rate) | {d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}], n = {d['generated']} | 0.713 |" in text
    assert f"| r_full (full-code valid rate) | {f['rate']:.3f}" in text and "| 0.506 |" in text
    ratio, lo, hi = theory.rate_ratio_ci(d["valid"], d["generated"], f["valid"], f["generated"])
    assert f"| r_δ / r_full measured | {ratio:.2f} [{lo:.2f}, {hi:.2f}] | 1.41 |" in text
    assert f"{fig2.markov['predicted_ratio']:.2f}" in text and "2.23" in text
    late = sorted(d["per_cycle"])[1:]  # 3 cycles: the later half is cycles 1-2
    kd, nd = (sum(d["per_cycle"][c][k] for c in late) for k in ("valid", "n"))
    kf, nf = (sum(f["per_cycle"][c][k] for c in late) for k in ("valid", "n"))
    assert f"| cycles 1–2 only: r_δ / r_full | {kd}/{nd} = {kd / nd:.3f} vs {kf}/{nf} = {kf / nf:.3f}, " \
           f"ratio {(kd / nd) / (kf / nf):.2f} |" in text
    apply_share = fig2.markov["apply_share_of_delta_failures"]
    assert f"| share of delta failures due to applying the edit | {apply_share:.2f}" in text

    fig1 = analyse(out / "fig1_convergence")
    assert f"S = {fig1.trend.s}, one-sided p(increasing) = {fig1.trend.p_increasing:.3g}" in text
    c0 = fig1.cycles[0]
    assert f"| 0 | {c0.generated} | {c0.trained} | {c0.mean_q:.3f} [{c0.q_low:.3f}, {c0.q_high:.3f}]" in text
    assert "3,300 architectures" in text and "22 cycles" in text
    verdict = next(x for x in text.splitlines() if x.startswith("| persistent novel admissions"))
    assert f"fig1_convergence: accepted per cycle {[c.accepted for c in fig1.cycles]}; " \
           f"fig2_delta_vs_full: accepted per cycle {[c.accepted for c in fig2.cycles]}" in verdict

    abl = analyse(out / "ablation_novelty")
    assert f"| 1 | {fig1.cycles[1].diversity:.3f} | {fig1.cycles[1].duplicates} | {abl.cycles[1].diversity:.3f} |" in text
    assert "| CE (fig1_convergence) | LLM frozen (controls_frozen) |" in text  # mutation control absent
    assert "| controls_mutation | " in text and "| not run | 0 / 6 |" in text

    psnr = json.loads((out / "table_proxy_reliability/proxy_snr.json").read_text())["analysis"]
    assert f"| SNR (one run) | {float(psnr['snr']['snr']):.2f}" in text
    ceiling = json.loads((out / "table_proxy_reliability/ceiling.json").read_text())
    row = next(r for r in ceiling["rows"] if r["cycle"] == 1 and r["analysis"])
    assert f"| 1 | {row['K']} | {float(row['analysis']['snr']['sigma2_arch']):.5f} |" in text
    assert f"Spearman ρ_S [95% CI] | {res.spearman.estimate:.3f}" in text and "| 0.926 |" in text
    # Figure 1's diagnostics for the Figure 2 run too (a CE run with more generations per cycle).
    conv2 = text.split("### The same diagnostics on the Figure 2 run")[1].split("\n## ")[0]
    f0 = fig2.cycles[0]
    assert f"| 0 | {f0.generated} | {f0.trained} | {f0.mean_q:.3f}" in conv2 and f"S = {fig2.trend.s}," in conv2
    for fig in ("convergence_fig1_convergence.png", "convergence_fig2_delta_vs_full.png", "fig2_delta_vs_full.png",
                "ablation_novelty.png", "controls.png", "table_proxy_reliability.png", "ceiling_effect.png"):
        assert (out / "figures" / fig).stat().st_size > 1000 and f"(figures/{fig})" in text
    assert any("wrote" in x and "SUMMARY.md" in x for x in lines)


def test_makefile_targets_call_the_entry_point():
    small = subprocess.run(["make", "-n", "reproduce-small"], cwd=ROOT, capture_output=True, text=True)
    assert "experiments/reproduce.py small --out runs/reproduce-small" in small.stdout
    check = subprocess.run(["make", "-n", "reproduce", "CHECK=1", "DATA_DIR=/d", "LLMS=/a /b"], cwd=ROOT,
                           capture_output=True, text=True)
    assert 'experiments/reproduce.py paper --out runs/reproduce --check  --data-dir "/d" --llms "/a /b"' in check.stdout
    smoke = subprocess.run(["make", "-n", "reproduce", "SMOKE=1"], cwd=ROOT, capture_output=True, text=True)
    assert "--smoke" in smoke.stdout and "--check" not in smoke.stdout


def test_execute_skips_finished_steps_resumes_interrupted_runs_and_runs_the_rest(tmp_path, monkeypatch):
    from cenas_jax.rundir import LoopState, RunDir

    out = tmp_path / "rs"
    plan = rp.small_plan(out)
    make_run(out / "fig2_delta_vs_full", cycles=1, per_cycle=4)  # finished
    make_run(out / "fig1_convergence", cycles=2, per_cycle=4)
    RunDir(out / "fig1_convergence").save_state(LoopState(cycle=1, phase="train", status="interrupted"))
    calls: list[list[str]] = []
    monkeypatch.setattr(rp.subprocess, "call", lambda cmd, **k: calls.append(cmd[3:]) or 0)
    failed = rp.execute(plan, echo=lambda s: None)
    assert failed == 0
    firsts = [(c[0], c[1]) for c in calls]
    assert ("run", str(rp.CONFIGS / "fig2_delta_vs_full.yaml")) not in firsts  # finished: skipped
    assert calls[0] == ["resume", str(out / "fig1_convergence"), "--no-progress"]
    assert calls[1][:2] == ["run", str(rp.CONFIGS / "ablation_novelty.yaml")]
    assert "search.max_wall_s=1020" in calls[1]
    assert [c[0] for c in calls[:6]] == ["resume", "run", "run", "run", "proxy-snr", "retrain"]
    assert calls[4][calls[4].index("--run") + 1] == str(out / "fig1_convergence")
    # Reports only for runs whose store exists (here the two synthetic ones; the fake runs wrote nothing).
    assert [c for c in calls if c[0] == "report"] == [["report", str(out / "fig2_delta_vs_full")],
                                                       ["report", str(out / "fig1_convergence")]]
    # Every executed step is logged with its wall time; the summary sums them against the 2-hour budget.
    recs = [json.loads(x) for x in (out / rp.STEP_LOG).read_text().splitlines()]
    assert len(recs) == len(calls) and [r["args"] for r in recs] == calls
    assert recs[0]["step"] == "fig1_convergence" and all(r["rc"] == 0 and r["seconds"] >= 0 for r in recs)
    with open(out / rp.STEP_LOG, "a") as f:  # a resumed attempt of fig1 and a line cut short by a kill
        f.write(json.dumps({**recs[0], "seconds": 7300.0, "rc": 1}) + "\n" + '{"step": "retr')
    text = rp.write_summary(plan).read_text()
    wall = text.split("## Wall time")[1].split("\n## ")[0]
    assert "| fig1_convergence | 2 | 2.0 h | " in wall and "0, 1 |" in wall
    assert "OVER budget" in wall and "within budget" not in wall


def test_paper_summary_has_a_row_per_llm_beside_the_delta_papers(tmp_path):
    plan = rp.paper_plan(tmp_path, ["/m/a", "/m/b"], "/d")
    make_run(tmp_path / "fig1_convergence-llm1", cycles=2, per_cycle=6, mode="delta", seed=5)
    text = rp.write_summary(plan).read_text()
    a = analyse(tmp_path / "fig1_convergence-llm1")
    d = a.modes["delta"]
    assert f"| `/m/a` (ours) | {d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] |" in text
    assert "| `/m/b` (ours) | not run |" in text and "| DeepSeek-Coder-7B-Instruct (paper) | 0.753 | 0.658 |" in text
    assert "paper scale" in text and "| fig2_delta_vs_full-llm2 |" in text


def test_a_failed_step_makes_the_exit_code_1_and_the_summary_is_still_written(tmp_path, monkeypatch):
    out = tmp_path / "rs"
    # proxy-snr fails; every other step "succeeds" without writing anything.
    monkeypatch.setattr(rp.subprocess, "call", lambda cmd, **k: 1 if cmd[3] == "proxy-snr" else 0)
    lines: list[str] = []
    assert rp.main(["small", "--out", str(out)], echo=lines.append) == 1
    assert any("2 step(s) failed" in x for x in lines)  # proxy-snr, and retrain (fig1 wrote no store)
    text = (out / "SUMMARY.md").read_text()
    assert "| table_proxy_reliability | 1 | " in text and "| 1 |" in text.split("## Wall time")[1]
    monkeypatch.setattr(rp.subprocess, "call", lambda cmd, **k: pytest.fail("--summary-only runs nothing"))
    assert rp.main(["small", "--out", str(out), "--summary-only"], echo=lines.append) == 0
