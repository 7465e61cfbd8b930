"""Reading a reproduction's outputs into a :class:`~cenas_jax.report.summary.Summary`.

:func:`read_summary` reads what a reproduction left on disk (run stores, ``proxy_snr.json`` and
``ceiling.json``, retrain's JSON; whatever exists) into the summary's numbers. It writes nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cenas_jax import theory
from cenas_jax.report.analysis import PAPER, RunAnalysis, analyse
from cenas_jax.report.summary import (
    EXPERIMENTS,
    Ablation,
    Ceiling,
    CeilingRow,
    ControlRun,
    Controls,
    Convergence,
    ConvergenceRow,
    DeltaVsFull,
    EliteMass,
    LateCycles,
    LlmRow,
    NoveltyRow,
    PerLlm,
    PlannedRun,
    ProxyReliability,
    QPoint,
    Rate,
    Reproduction,
    Retrain,
    RhoComparison,
    RunStatus,
    StepTime,
    Summary,
    ValidRateRow,
    Verdicts,
    WallTime,
)


def read_summary(rep: Reproduction) -> Summary:
    """Read the reproduction's outputs (whatever exists) into a :class:`Summary`."""
    analyses = {r.name: _analyse(r.run_dir) for r in rep.runs}
    # Paper plans name runs per LLM: read LLM 1's (and the LLM-independent mutation control).
    main = {b: analyses.get(b) or next((a for k, a in analyses.items() if k.startswith(b + "-")), None)
            for b in EXPERIMENTS}
    fig1, fig2, abl = main["fig1_convergence"], main["fig2_delta_vs_full"], main["ablation_novelty"]
    ablation = _ablation(fig1, abl)
    proxy = _proxy(rep.proxy_snr_dir)
    fig1_conv = _convergence(fig1, "fig1_convergence")
    fig2_conv = _convergence(fig2, "fig2_delta_vs_full")
    return Summary(
        name=rep.name, scale=rep.scale, written=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        runs=tuple(_status(r, analyses.get(r.name)) for r in rep.runs),
        wall_time=_wall_time(rep),
        fig1=fig1_conv, fig2_convergence=fig2_conv,
        fig2=_delta_vs_full(fig2),
        ablation=ablation,
        controls=_controls(fig1, main["controls_frozen"], main["controls_mutation"]),
        proxy=proxy, proxy_snr_dir=rep.proxy_snr_dir,
        retrain=_retrain(rep.retrain_json),
        per_llm=_per_llm(rep, analyses),
        verdicts=_verdicts([c for c in (fig1_conv, fig2_conv) if c is not None], fig2, proxy, ablation),
    )


def _analyse(rd: Path) -> RunAnalysis | None:
    if not (rd / "store.sqlite").exists():
        return None
    try:
        return analyse(rd)
    except Exception as e:  # noqa: BLE001 - an unreadable run is reported as such, the summary goes on
        print(f"summary: cannot analyse {rd}: {e}", file=sys.stderr)
        return None


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _num(v: Any) -> float | None:
    """A number from JSON, or None (missing, null, not a number)."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _pair(v: Any) -> tuple[float | None, float | None]:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return _num(v[0]), _num(v[1])
    return None, None


def _status(run: PlannedRun, a: RunAnalysis | None) -> RunStatus:
    status = run.state or "not run"
    if a is None:
        return RunStatus(run.name, run.run_dir, status, 0, run.cycles, None, None, None)
    return RunStatus(run.name, run.run_dir, status, len(a.cycles), run.cycles, sum(c.generated for c in a.cycles),
                     sum(c.trained for c in a.cycles), sum(c.seconds or 0 for c in a.cycles))


def _wall_time(rep: Reproduction) -> WallTime:
    """Wall seconds per step (all executions summed) against the estimate and the budget."""
    rows = []
    for s in rep.steps:
        mine = [r for r in rep.executed if r.step == s.name]
        if mine:
            rows.append(StepTime(s.name, len(mine), sum(float(r.seconds) for r in mine), s.est_s,
                                 tuple(r.rc for r in mine)))
    first = rep.executed[0].started if rep.executed else None
    return WallTime(rep.step_log, len(rep.executed), tuple(rows), sum(r.seconds for r in rows), rep.budget_s, first)


def _convergence(a: RunAnalysis | None, run: str) -> Convergence | None:
    if a is None:
        return None
    rows = tuple(ConvergenceRow(c.cycle, c.generated, c.trained, c.accepted, c.mean_q, c.q_low, c.q_high, c.gamma)
                 for c in a.cycles)
    ec = a.elite_check
    elite = None
    if ec is not None:
        elite = EliteMass(float(ec.rho0), tuple(float(x) for x in ec.mass), tuple(float(x) for x in ec.low),
                          tuple(float(x) for x in ec.high), tuple(float(x) for x in ec.bound),
                          tuple(bool(h) for h in ec.holds_within_ci))
    return Convergence(run, rows, a.trend, elite)


def _rate(x: dict[str, Any] | None) -> Rate | None:
    return Rate(x["valid"], x["n"], x["rate"], x["low"], x["high"]) if x else None


def _delta_vs_full(a: RunAnalysis | None) -> DeltaVsFull | None:
    if a is None or "delta" not in a.modes or "full" not in a.modes:
        return None
    d, f = a.modes["delta"], a.modes["full"]
    cyc = sorted(set(d["per_cycle"]) | set(f["per_cycle"]))
    rows = tuple(ValidRateRow(t, _rate(d["per_cycle"].get(t)), _rate(f["per_cycle"].get(t))) for t in cyc)
    ratio = lo = hi = None
    if d["valid"] > 0 and f["valid"] > 0:
        ratio, lo, hi = theory.rate_ratio_ci(d["valid"], d["generated"], f["valid"], f["generated"])
    # The paper's rates average 22 cycles; a short run is dominated by its first cycles, before the CE
    # updates have taught the answer formats: the same rates over the later half of the cycles.
    late_cycles = cyc[len(cyc) // 2:] if len(cyc) >= 2 else []
    late = None
    if late_cycles:
        def pooled(pc):
            return (sum(pc[c]["valid"] for c in late_cycles if pc.get(c)),
                    sum(pc[c]["n"] for c in late_cycles if pc.get(c)))

        (kd, nd), (kf, nf) = pooled(d["per_cycle"]), pooled(f["per_cycle"])
        if nd and nf:
            late = LateCycles(late_cycles[0], late_cycles[-1], kd, nd, kf, nf,
                              theory.rate_ratio_ci(kd, nd, kf, nf)[0] if kd and kf else None)
    mk = a.markov
    return DeltaVsFull(
        rows=rows, delta=Rate(d["valid"], d["generated"], d["rate"], d["low"], d["high"]),
        full=Rate(f["valid"], f["generated"], f["rate"], f["low"], f["high"]),
        ratio=ratio, ratio_low=lo, ratio_high=hi, late=late,
        markov_ratio=mk.get("predicted_ratio"), eps_hat=mk.get("eps_hat"),
        delta_tokens=d["mean_tokens"], full_tokens=f["mean_tokens"],
        apply_share=mk.get("apply_share_of_delta_failures"), apply_failures=d["apply_failures"],
        delta_failures=d["failures"],
        needed_per_mode=theory.two_proportion_sample_size(PAPER["r_delta"], PAPER["r_full"]))


def _ablation(on: RunAnalysis | None, off: RunAnalysis | None) -> Ablation | None:
    if on is None or off is None:
        return None
    a_on = {c.cycle: c for c in on.cycles}
    a_off = {c.cycle: c for c in off.cycles}
    rows = []
    for t in sorted(set(a_on) | set(a_off)):
        x, y = a_on.get(t), a_off.get(t)
        rows.append(NoveltyRow(t, x.diversity if x else None, x.duplicates if x else None,
                               y.diversity if y else None, y.accepted if y else None))
    return Ablation(tuple(rows), _mean([c.diversity for c in on.cycles]), _mean([c.diversity for c in off.cycles]))


def _controls(ce: RunAnalysis | None, frozen: RunAnalysis | None, mutation: RunAnalysis | None) -> Controls | None:
    runs = {"CE (fig1_convergence)": ce, "LLM frozen (controls_frozen)": frozen,
            "random mutation (controls_mutation)": mutation}
    present = {k: v for k, v in runs.items() if v is not None}
    if len(present) < 2:
        return None
    out = []
    for label, a in present.items():
        gen = sum(c.generated for c in a.cycles)
        val = sum(c.valid for c in a.cycles)
        allq = [q for c in a.cycles for q in c.qualities]
        t = a.trend
        out.append(ControlRun(label, tuple(QPoint(c.cycle, c.mean_q, c.q_low, c.q_high) for c in a.cycles),
                              val / gen if gen else None, _mean(allq), max(allq) if allq else None,
                              t.p_increasing if t else None, t.sen_slope if t else None))
    return Controls(tuple(out))


def _proxy(psnr_dir: Path) -> ProxyReliability | None:
    pj = psnr_dir / "proxy_snr.json"
    if not pj.is_file():
        return None
    doc = json.loads(pj.read_text())
    an = doc["analysis"]
    snr = an["snr"]
    comps = []
    for name, comp in an["comparisons"].items():
        m = comp.get("measured") or {}
        comps.append(RhoComparison(name, _num(comp.get("predicted")), _num(m.get("estimate")), _num(m.get("ci_low")),
                                   _num(m.get("ci_high")), _num(m.get("p_value")),
                                   PAPER["qwen_spearman"] if name == "truth_single" else None))
    cj = psnr_dir / "ceiling.json"
    return ProxyReliability(
        architectures=len(an["ids"]), seeds=len(an["proxy_scores"][0]) if an["proxy_scores"] else 0,
        proxy_epochs=doc["proxy_epochs"], truth_epochs=doc["truth_epochs"], dataset=doc["config"]["data"]["name"],
        sigma2_arch=_num(snr.get("sigma2_arch")), sigma2_noise=_num(snr.get("sigma2_noise")), snr=_num(snr.get("snr")),
        snr_low=_pair(snr.get("snr_ci"))[0], snr_high=_pair(snr.get("snr_ci"))[1], comparisons=tuple(comps),
        ceiling=_ceiling(json.loads(cj.read_text())) if cj.is_file() else None,
        figure=psnr_dir / "proxy_snr.png", ceiling_figure=psnr_dir / "ceiling.png")


def _ceiling(doc: dict[str, Any]) -> Ceiling:
    """The ceiling effect (σ²_arch and ρ_S per cycle of the fig1 run) from proxy-snr's ceiling.json."""
    rows = []
    for r in doc["rows"]:
        a = r.get("analysis")
        if a is None:
            rows.append(CeilingRow(r["cycle"], r["K"], None, None, None, None, False, r.get("note")))
            continue
        rt = a["comparisons"].get("retest", {})
        m = rt.get("measured") or {}
        rows.append(CeilingRow(r["cycle"], r["K"], _num(a["snr"].get("sigma2_arch")), _num(a["snr"].get("snr")),
                               _num(rt.get("predicted")), _num(m.get("estimate")), True, r.get("note")))
    tr = doc.get("sigma2_arch_trend")
    return Ceiling(doc["run_dir"], doc["scores_from"], doc["seeds"], tuple(rows), tr["s"] if tr else None,
                   _num(tr["p_two_sided"]) if tr else None, _num(tr["sen_slope"]) if tr else None)


def _retrain(path: Path) -> Retrain | None:
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    sp = doc.get("spearman")
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["test_accuracy"]) if ok else None
    return Retrain(
        proxy_epochs=doc["proxy_epochs"], epochs=doc["epochs"], seeds=doc["seeds"], retrained=len(doc["rows"]),
        trained=len(ok), spearman=sp["estimate"] if sp else None, spearman_low=sp["ci_low"] if sp else None,
        spearman_high=sp["ci_high"] if sp else None, spearman_p=sp["p_value"] if sp else None,
        note=doc.get("note"), best_accuracy=best["test_accuracy"] if best else None,
        best_id=best["candidate_id"] if best else None, paper_spearman=doc["reference"]["spearman"])


def _per_llm(rep: Reproduction, analyses: dict[str, RunAnalysis | None]) -> PerLlm | None:
    """Paper plans: each LLM's delta run (fig1, delta mode)."""
    runs = [r for r in rep.runs if r.name.startswith("fig1_convergence-llm")]
    if len(runs) < 2:
        return None
    rows = []
    for r in runs:
        llm = r.llm or "?"
        a = analyses.get(r.name)
        if a is None or "delta" not in a.modes:
            rows.append(LlmRow(llm, r.name, None, None, None))
            continue
        d = a.modes["delta"]
        acc = [b["accuracy"] for b in a.best if b.get("accuracy") is not None]
        rows.append(LlmRow(llm, r.name, Rate(d["valid"], d["generated"], d["rate"], d["low"], d["high"]),
                           _mean([q for c in a.cycles for q in c.qualities]), max(acc) if acc else None))
    return PerLlm(tuple(rows))


def _verdicts(conv: list[Convergence], fig2: RunAnalysis | None, proxy: ProxyReliability | None,
              ablation: Ablation | None) -> Verdicts:
    ts = proxy.comparison("truth_single") if proxy is not None else None
    mk = fig2.markov if fig2 else {}
    return Verdicts(
        trends=tuple((c.run, c.trend) for c in conv if c.trend is not None),
        accepted=tuple((c.run, tuple(r.accepted for r in c.rows)) for c in conv if c.rows),
        elite_mass=tuple((c.run, c.elite.mass, c.elite.bound) for c in conv if c.elite is not None),
        proxy_run=proxy is not None, snr=proxy.snr if proxy else None,
        rho_measured=ts.measured if ts else None, rho_p=ts.p_value if ts else None,
        rho_predicted=ts.predicted if ts else None,
        ratio_measured=mk.get("measured_ratio"), ratio_predicted=mk.get("predicted_ratio"),
        ablation_run=ablation is not None, similarity_with=ablation.mean_with if ablation else None,
        similarity_without=ablation.mean_without if ablation else None)
