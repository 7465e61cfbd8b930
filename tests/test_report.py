"""The report's numbers, on a store written by hand with known contents."""

import csv

import numpy as np
import pytest
from programs import mlp

from cenas_jax import theory
from cenas_jax.config import RunConfig
from cenas_jax.report.analysis import analyse, lineage_chain
from cenas_jax.report.export import export_csv
from cenas_jax.report.markdown import write_report
from cenas_jax.rundir import LoopState, RunDir
from cenas_jax.store import CandidateRow, RunStore


def _fill(path):
    """Two cycles: cycle 0 has 4 full + 4 delta generations, cycle 1 the same with better qualities."""
    RunDir(path).create(RunConfig(), {})
    s = RunStore(path)
    rid = s.create_run("main", {"search": {"cycles": 2, "candidates_per_cycle": 8}})
    s.add_candidate(CandidateRow(id="L-a", source=mlp(1), run_id=rid, cycle=-1, idx=0, mode="corpus", dataset="digits"))
    s.add_evaluation("L-a", {"status": "ok", "accuracy": 0.5, "params": 10})
    s.set_cycle(rid, -1, reference={"digits": 0.5})
    plan = {
        0: [("full", "accepted", 0.8, 20), ("full", "invalid", None, 20), ("full", "duplicate", None, 20), ("full", "accepted", 1.0, 20),
            ("delta", "accepted", 0.9, 10), ("delta", "accepted", 1.1, 10), ("delta", "invalid", None, 10), ("delta", "accepted", 0.7, 10)],
        1: [("full", "accepted", 1.2, 20), ("full", "invalid", None, 20), ("full", "accepted", 1.0, 20), ("full", "accepted", 1.1, 20),
            ("delta", "accepted", 1.3, 10), ("delta", "accepted", 1.2, 10), ("delta", "accepted", 0.9, 10), ("delta", "invalid", None, 10)],
    }
    for t, items in plan.items():
        for i, (mode, verdict, q, ntok) in enumerate(items):
            cid = f"s0-c{t:03d}-{i:03d}-a0"
            parent = "L-a" if t == 0 else "s0-c000-005-a0"
            s.add_candidate(CandidateRow(id=cid, source=mlp(8 + 4 * i + 50 * t), run_id=rid, cycle=t, idx=i,
                                         mode=mode, parent_id=parent if mode == "delta" else None, dataset="digits",
                                         token_count=ntok))
            kind = {"invalid": "delta_apply" if mode == "delta" else "shape", "duplicate": "duplicate"}.get(verdict)
            s.update_candidate(cid, verdict=verdict, quality=q, error_kind=kind)
            if q is not None:  # two accepted programs of each cycle share a structure
                s.add_evaluation(cid, {"status": "ok", "accuracy": q * 0.5, "params": 100 + i,
                                       "structure_hash": f"h{min(i, 4)}"})
        qs = [q for _, _, q, _ in items if q is not None]
        gamma = float(np.quantile(qs, 0.75))
        s.set_cycle(rid, t, gamma=gamma, elites=[f"s0-c{t:03d}-{i:03d}-a0" for i, it in enumerate(items) if it[2] is not None and it[2] >= gamma])
        for phase, sec in (("generate", 10.0), ("sample", 8.0), ("update", 2.5)):  # "sample" is inside "generate"
            s.add_timing(rid, t, phase, sec)
    s.add_finetune_losses(rid, 0, [2.0, 1.5])
    s.close()
    RunDir(path).save_state(LoopState(cycle=2, phase="done", status="finished"))
    return plan


def test_analysis_numbers(tmp_path):
    plan = _fill(tmp_path)
    a = analyse(tmp_path)
    assert [c.generated for c in a.cycles] == [8, 8]
    # duplicates are valid generations (they passed the cheap checks)
    assert [c.valid for c in a.cycles] == [6, 6]
    assert a.modes["full"]["generated"] == 8 and a.modes["full"]["valid"] == 6
    assert a.modes["delta"]["valid"] == 6 and a.modes["delta"]["apply_failures"] == 2
    lo, hi = theory.wilson_interval(6, 8)
    assert a.modes["full"]["low"] == pytest.approx(lo)
    assert a.modes["full"]["mean_tokens"] == 20 and a.modes["delta"]["mean_tokens"] == 10
    # Markov: calibrate on full (rate .75 over 20 tokens), predict delta over 10 tokens = .75 ** .5
    assert a.markov["predicted_delta_rate"] == pytest.approx(0.75 ** 0.5)
    assert a.markov["measured_ratio"] == pytest.approx(1.0)
    assert a.markov["apply_share_of_delta_failures"] == 1.0
    # elite mass with gamma* = gamma_0
    q0 = [q for _, _, q, _ in plan[0] if q is not None]
    g0 = float(np.quantile(q0, 0.75))
    c = [sum(q is not None and q >= g0 for _, _, q, _ in plan[t]) / 8 for t in (0, 1)]
    assert a.elite_check.mass.tolist() == pytest.approx(c)
    assert a.elite_check.bound[1] == pytest.approx(c[0])
    assert a.cycles[1].mean_q == pytest.approx(np.mean([1.2, 1.0, 1.1, 1.3, 1.2, 0.9]))
    assert a.cycles[1].best_so_far == pytest.approx(1.3)
    assert a.best[0]["id"] == "s0-c001-004-a0"
    assert lineage_chain(a, "s0-c001-004-a0") == ["s0-c001-004-a0", "s0-c000-005-a0", "L-a"]
    assert a.cycles[0].error_kinds == {"shape": 1, "duplicate": 1, "delta_apply": 1}
    # cycle 0 accepts slots 0, 3, 4, 5, 7 -> hashes h0, h3, h4, h4, h4
    assert a.cycles[0].distinct_structures == 3
    # a cycle's time is its phases' ("sample" is inside "generate")
    assert [c.seconds for c in a.cycles] == [12.5, 12.5]


def test_report_and_export_files(tmp_path):
    _fill(tmp_path)
    md = write_report(tmp_path)
    text = md.read_text()
    assert "| 1 | 8 | 0 | 6 |" in text  # cycle, generated, unchecked, valid
    assert "0.713" in text and "cannot be a ratio of rates" in text
    for name in ("quality.png", "elite_mass.png", "valid_rate.png", "errors.png", "novelty.png", "lineage.png"):
        p = md.parent / name
        assert p.exists() and p.stat().st_size > 5000, name
        assert f"]({name})" in text
    out = tmp_path / "c.csv"
    assert export_csv(tmp_path, out) == 17
    rows = list(csv.DictReader(open(out)))
    r = {x["id"]: x for x in rows}["s0-c001-004-a0"]
    assert r["parent_id"] == "s0-c000-005-a0" and float(r["quality"]) == 1.3 and float(r["accuracy"]) == 0.65


def test_elite_mass_figure_with_a_zero_mass_cycle(tmp_path):
    from types import SimpleNamespace

    from cenas_jax.report import figures

    ec = theory.elite_bound_check([[0.1, 0.2], [0.3]], 0.5, [4, 4])  # C_t = 0: a zero-width lower error bar
    assert figures._save(figures._elite_mass(SimpleNamespace(elite_check=ec)), tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 5000


def test_quality_axis_follows_the_q_values_not_a_two_point_confidence_band():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cenas_jax.report.figures import clip_quality_axis

    fig, ax = plt.subplots()
    means, gammas = [1.39, 2.26, 2.41], [2.43, 2.39, float("nan")]
    ax.fill_between([0, 1, 2], [-11.7, 1.9, 2.4], [14.5, 2.6, 2.5])  # cycle 0: two candidates
    ax.plot([0, 1, 2], means)
    clip_quality_axis(ax, means, gammas)
    assert ax.get_ylim() == pytest.approx((0.0, 1.25 * 2.43))
    clip_quality_axis(ax, [float("nan")])  # nothing finite: the axis is left alone
    assert ax.get_ylim() == pytest.approx((0.0, 1.25 * 2.43))
    plt.close(fig)


def _digits_n_val() -> int:
    from cenas_jax.config import DataConfig
    from cenas_jax.data import load_dataset

    return len(load_dataset(DataConfig(name="digits")).y_val)


def _baseline_run(path, *, seeds=None, state=LoopState(cycle=1, phase="done", status="finished"), unchecked=0):  # noqa: B008 - frozen dataclass, a shared default is safe
    """One cycle against a two-program corpus: a linear model one image above the best corpus program, and a
    clearly better one. ``seeds``: per-program seed accuracies (default one seed)."""
    n = _digits_n_val()
    RunDir(path).create(RunConfig(), {})
    s = RunStore(path)
    rid = s.create_run("main", {"data": {"name": "digits"}, "search": {"cycles": 2, "candidates_per_cycle": 3}})
    corpus = {"mlp_small": 0.8, "lenet5": 0.6}
    for i, (name, acc) in enumerate(corpus.items()):
        cid = f"L-digits-{name}"
        s.add_candidate(CandidateRow(id=cid, source=mlp(i + 1), run_id=rid, cycle=-1, idx=i, mode="corpus",
                                     dataset="digits"))
        s.add_evaluation(cid, {"status": "ok", "accuracy": acc, "params": 10, "seed_accuracies": (seeds or {}).get(name, [acc]),
                               "degenerate": []}, dataset="digits")
    s.set_cycle(rid, -1, reference={"digits": 0.7})
    cands = {"lin": (0.8 + 1 / n, ["linear: the logits are an affine function of the input"]), "good": (0.95, [])}
    for i, (name, (acc, flags)) in enumerate(cands.items()):
        cid = f"s0-c000-{i:03d}-a0"
        s.add_candidate(CandidateRow(id=cid, source=mlp(10 + i), run_id=rid, cycle=0, idx=i, mode="full", dataset="digits"))
        s.update_candidate(cid, verdict="accepted", quality=acc / 0.7)
        s.add_evaluation(cid, {"status": "ok", "accuracy": acc, "params": 20, "degenerate": flags,
                               "seed_accuracies": (seeds or {}).get(name, [acc])}, dataset="digits")
    s.set_cycle(rid, 0, gamma=1.2, elites=["s0-c000-001-a0"])
    for i in range(unchecked):  # cycle 1: sampled, never checked
        s.add_candidate(CandidateRow(id=f"s0-c001-{i:03d}-a0", source="x", run_id=rid, cycle=1, idx=i, mode="full",
                                     dataset="digits"))
    s.close()
    RunDir(path).save_state(state)
    return n


def test_report_shows_the_corpus_baseline_and_which_candidates_beat_it_beyond_noise(tmp_path):
    n = _baseline_run(tmp_path)
    a = analyse(tmp_path)
    assert [(c["name"], c["accuracy"], c["quality"]) for c in a.corpus] == [
        ("mlp_small", 0.8, pytest.approx(0.8 / 0.7)), ("lenet5", 0.6, pytest.approx(0.6 / 0.7))]
    assert a.corpus_best["digits"]["name"] == "mlp_small" and a.corpus_best_q == pytest.approx(0.8 / 0.7)
    assert a.noise["digits"].n_val == n and a.noise["digits"].seed_sd is None
    v = {b["id"]: b["vs_corpus"] for b in a.best}
    se_lin = np.sqrt((0.8 + 1 / n) * (0.2 - 1 / n) / n + 0.8 * 0.2 / n)
    assert v["s0-c000-000-a0"]["beats"] is False and v["s0-c000-000-a0"]["se"] == pytest.approx(se_lin)
    assert v["s0-c000-001-a0"]["beats"] is True
    assert a.cycles[0].beats_corpus == 1 and a.cycles[0].degenerate == 1
    text = write_report(tmp_path).read_text()
    assert "## Seed corpus (the baseline)" in text and "| mlp_small | digits | 0.800 | 1.143 |" in text
    assert "1 of 2 trained candidates beat the best corpus program" in text
    assert f"(+1 of {n} validation images)" in text and "does **not** beat it" in text
    assert "**Warning — degenerate program:** linear: the logits are an affine function" in text
    assert "| 1.357 | 1.357 | 1.143 | 1 | 1 |" in text  # best Q (cycle), best so far, best corpus Q, beat, degenerate


def test_seed_spread_is_the_noise_when_programs_have_several_seeds(tmp_path):
    seeds = {"mlp_small": [0.78, 0.80, 0.82], "lenet5": [0.58, 0.60, 0.62], "lin": [0.79, 0.80, 0.81 + 3 / 270],
             "good": [0.94, 0.95, 0.96]}
    n = _baseline_run(tmp_path, seeds=seeds)
    a = analyse(tmp_path)
    pooled = np.sqrt(np.mean([np.var(v, ddof=1) for v in seeds.values()]))
    assert a.noise["digits"].seed_sd == pytest.approx(pooled) and a.noise["digits"].seed_programs == 4
    good = next(b for b in a.best if b["id"] == "s0-c000-001-a0")["vs_corpus"]
    se = np.sqrt(pooled ** 2 / 3 + 0.95 * 0.05 / n + pooled ** 2 / 3 + 0.8 * 0.2 / n)
    assert good["se"] == pytest.approx(se) and good["z"] == pytest.approx(0.15 / se) and good["beats"]


def test_an_interrupted_run_is_reported_as_such_with_unchecked_generations_apart(tmp_path):
    _baseline_run(tmp_path, state=LoopState(cycle=1, phase="generate", status="interrupted"), unchecked=3)
    a = analyse(tmp_path)
    assert a.status == "interrupted" and a.position == (1, "generate")
    assert [c.complete for c in a.cycles] == [True, False] and a.cycles_completed == 1
    assert a.cycles[1].unchecked == 3 and a.cycles[1].valid == 0
    assert a.modes["full"]["generated"] == 2 and a.modes["full"]["rate"] == 1.0 and a.modes["full"]["unchecked"] == 3
    text = write_report(tmp_path).read_text()
    assert "1 of 2 cycles completed" in text
    assert "**This run was interrupted at cycle 1, phase `generate`" in text and "cenas resume" in text
    assert "3 generations were sampled but never checked" in text
    assert "| 1 (incomplete) | 3 | 3 | 0 |" in text
    assert "of 2 checked (3 unchecked left out)" in text


def test_a_failed_run_says_failed(tmp_path):
    _baseline_run(tmp_path, state=LoopState(cycle=0, phase="train", status="failed"))
    text = write_report(tmp_path).read_text()
    assert "**This run failed at cycle 0, phase `train`" in text and "0 of 2 cycles completed" in text


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _legend_clear_of_axes_and_title(fig):
    r = _drawn(fig)
    ax = fig.axes[0]
    legends = [lg for a in fig.axes for lg in ([a.get_legend()] if a.get_legend() else [])] + list(fig.legends)
    assert legends, "no legend"
    box = ax.get_window_extent(r)
    title = ax.title.get_window_extent(r)
    for lg in legends:
        lb = lg.get_window_extent(r)
        assert not lb.overlaps(box), "legend over the data"
        assert not lb.overlaps(title), "legend over the title"


@pytest.mark.parametrize("name", ["quality", "elite_mass", "valid_rate", "errors", "novelty", "lineage"])
def test_every_figure_has_its_legend_outside_the_data_and_the_title(tmp_path, name):
    from cenas_jax.report.figures import build_figure

    _fill(tmp_path)
    fig = build_figure(name, analyse(tmp_path))
    _legend_clear_of_axes_and_title(fig)


def test_one_cycle_run_gets_integer_cycle_ticks_and_integer_count_axes(tmp_path):
    from cenas_jax.report.figures import build_figure

    _baseline_run(tmp_path)  # one cycle with trained candidates
    a = analyse(tmp_path)
    for name in ("quality", "errors", "novelty", "valid_rate"):
        fig = build_figure(name, a)
        if fig is None:
            continue
        _drawn(fig)
        ticks = fig.axes[0].get_xticks()
        assert len(ticks) >= 1 and all(float(x).is_integer() for x in ticks), (name, ticks)
    # count axes: novelty rejections (and error counts) tick whole numbers only
    a.cycles[0].duplicates = 3
    a.cycles[0].error_kinds = {"syntax": 1, "shape": 2}
    for name in ("novelty", "errors"):
        fig = build_figure(name, a)
        _drawn(fig)
        ticks = [t for t in fig.axes[0].get_yticks() if fig.axes[0].get_ylim()[0] <= t <= fig.axes[0].get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_quality_figure_draws_the_corpus_baseline(tmp_path):
    from cenas_jax.report.figures import build_figure

    _baseline_run(tmp_path)
    fig = build_figure("quality", analyse(tmp_path))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "best corpus program (Q 1.143)" in labels and "median corpus program (Q 1)" in labels


def test_lineage_draws_the_seed_corpus_root_and_no_line_hides_another(tmp_path):
    from cenas_jax.report.figures import LINEAGE_SHIFT, build_figure

    _fill(tmp_path)
    a = analyse(tmp_path)
    assert a.lineage["L-a"]["quality"] == pytest.approx(1.0)  # NULL in the store: acc 0.5 / reference 0.5
    fig = build_figure("lineage", a)
    ax = fig.axes[0]
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert any(list(ln.get_xdata()) == [-1] and list(ln.get_ydata()) == [pytest.approx(1.0)] for ln in stars)
    chains = [ln for ln in ax.get_lines() if ln.get_label().startswith("#")]
    # The best two (s0-c001-004 and s0-c001-005) descend from the same parent: their lines are apart.
    assert len(chains) == 5
    paths = [list(zip(ln.get_xdata(), ln.get_ydata())) for ln in chains]
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            assert paths[i] != paths[j]
            xi = {round(x % 1, 6) for x, _ in paths[i]}
            xj = {round(x % 1, 6) for x, _ in paths[j]}
            assert xi.isdisjoint(xj)  # each lineage at its own sideways offset
    assert len({(ln.get_marker(), str(ln.get_linestyle())) for ln in chains}) == 5
    assert 0 < LINEAGE_SHIFT < 0.2
    assert "a" in [t.get_text() for t in ax.texts]  # the root is labelled with its corpus name


def test_throughput_counts_valid_and_novel_candidates_per_minute_of_recorded_time(tmp_path, capsys):
    from cenas_jax.cli import main

    _fill(tmp_path)
    a = analyse(tmp_path)
    # Without a recorded reference phase: the cycles' phases only (12.5 s each; "sample" is inside "generate").
    tp = a.throughput
    assert tp.novel == 5 + 6 and tp.cycle_seconds == 25.0 and tp.reference_seconds is None
    assert tp.per_minute == pytest.approx(60 * 11 / 25.0) and tp.per_minute_end_to_end is None
    assert tp.per_cycle == (pytest.approx((0, 60 * 5 / 12.5)), pytest.approx((1, 60 * 6 / 12.5)))
    with RunStore(tmp_path) as s:  # the loop records the reference phase at cycle -1
        s.add_timing(s.get_run("main")["id"], -1, "reference", 35.0)
    tp = analyse(tmp_path).throughput
    assert tp.reference_seconds == 35.0 and tp.per_minute_end_to_end == pytest.approx(60 * 11 / 60.0)
    assert "11.00 per minute end to end" in tp.line()
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"throughput: {tp.line()}" in out
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"Throughput: {tp.line()}. Per cycle: 0: 24.00, 1: 28.80 per minute." in text


def test_a_candidate_whose_latest_proxy_evaluation_failed_is_reported_not_a_crash(tmp_path):
    """A store can hold a Q beside a later failed proxy evaluation (e.g. a retried training that crashed)."""
    _fill(tmp_path)
    before = analyse(tmp_path)
    cid = "s0-c001-004-a0"
    was = next(c for c in before.best if c["id"] == cid)["vs_corpus"]
    with RunStore(tmp_path) as s:
        s.add_evaluation(cid, {"status": "error", "stage": "train", "error_kind": "crash"})
    a = analyse(tmp_path)
    assert a.cycles[1].trained == before.cycles[1].trained == 6  # the candidate keeps its Q
    # Without an accuracy it has no comparison with the corpus: it no longer counts as beating it.
    assert a.cycles[1].beats_corpus == before.cycles[1].beats_corpus - (1 if (was or {}).get("beats") else 0)
    assert write_report(tmp_path).is_file()
