"""A reproduction :class:`~cenas_jax.report.summary.Summary` as SUMMARY.md with its figures beside it.

:func:`write_figures` draws (and copies proxy-snr's) PNGs from the summary's numbers,
:func:`render_markdown` writes the Markdown from the same numbers, :func:`write_summary` does both.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from cenas_jax.report import fmt
from cenas_jax.report.figures import clip_quality_axis
from cenas_jax.report.fmt import DASH, duration
from cenas_jax.report.plotting import integer_ticks, pyplot, save
from cenas_jax.report.summary import (
    Ablation,
    Controls,
    Convergence,
    DeltaVsFull,
    PerLlm,
    ProxyReliability,
    Retrain,
    Summary,
    Verdicts,
    WallTime,
)

FIGURES = "figures"  # the folder beside SUMMARY.md


def write_summary(summary: Summary, path: str | Path) -> Path:
    """Write SUMMARY.md at ``path`` and its figures into ``figures/`` beside it; returns the path."""
    path = Path(path)
    figs = write_figures(summary, path.parent / FIGURES)
    path.write_text(render_markdown(summary, figs))
    return path


# ---------------------------------------------------------------------------------------------- figures


def write_figures(s: Summary, figdir: Path) -> dict[str, str]:
    """Draw every figure the summary has numbers for (and copy proxy-snr's); returns {name: link beside SUMMARY.md}."""
    figdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(name: str, draw, *args) -> None:
        path = figdir / f"{name}.png"
        draw(*args, path)
        out[name] = f"{figdir.name}/{path.name}"

    for conv in (s.fig1, s.fig2_convergence):
        if conv is not None:
            put(f"convergence_{conv.run}", _convergence_plot, conv)
    if s.fig2 is not None:
        put("fig2_delta_vs_full", _valid_rate_plot, s.fig2)
    if s.ablation is not None:
        put("ablation_novelty", _per_cycle_plot, {
            "with filter": [(r.cycle, r.with_similarity) for r in s.ablation.rows],
            "without filter": [(r.cycle, r.without_similarity) for r in s.ablation.rows]}, "mean pairwise Jaccard")
    if s.controls is not None:
        put("controls", _per_cycle_plot, {r.label: [(p.cycle, p.mean_q) for p in r.per_cycle] for r in s.controls.runs},
            "mean Q")
    if s.proxy is not None:  # figures `cenas proxy-snr` wrote, copied so the summary travels with them
        for src, name in ((s.proxy.figure, "table_proxy_reliability"), (s.proxy.ceiling_figure, "ceiling_effect")):
            if src.is_file():
                shutil.copyfile(src, figdir / f"{name}.png")
                out[name] = f"{figdir.name}/{name}.png"
    return out


def _convergence_plot(c: Convergence, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    cyc = [r.cycle for r in c.rows]
    m = [r.mean_q if r.mean_q is not None else math.nan for r in c.rows]
    lo = [r.q_low if r.q_low is not None else v for r, v in zip(c.rows, m)]
    hi = [r.q_high if r.q_high is not None else v for r, v in zip(c.rows, m)]
    ax1.plot(cyc, m, "o-", label="mean Q")
    ax1.fill_between(cyc, lo, hi, alpha=0.25, label="95% CI")
    gam = [r.gamma if r.gamma is not None else math.nan for r in c.rows]
    ax1.plot(cyc, gam, "s--", label="γ_t")
    clip_quality_axis(ax1, m, gam)
    ax1.set_xlabel("cycle"), ax1.set_ylabel("Q (accuracy / corpus median)"), ax1.legend(fontsize=8)
    e = c.elite
    if e is not None:
        mass, low, high = np.asarray(e.mass), np.asarray(e.low), np.asarray(e.high)
        # Rounding can put a Wilson limit a hair on the wrong side of the rate (k = 0 or k = n).
        err = [np.maximum(mass - low, 0), np.maximum(high - mass, 0)]
        ax2.errorbar(cyc[: len(mass)], mass, yerr=err, fmt="o-", label="C_t")
        ax2.plot(cyc[: len(e.bound)], e.bound, "k--", label="1−(1−ρ₀)^t")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("cycle"), ax2.set_ylabel("elite mass")
    integer_ticks(ax1, ax2)
    save(fig, path)


def _valid_rate_plot(f: DeltaVsFull, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for mode, mk, off in (("delta", "o-", -0.06), ("full", "s-", 0.06)):
        pts = [(r.cycle, getattr(r, mode)) for r in f.rows if getattr(r, mode) is not None]
        ax.errorbar([t + off for t, _ in pts], [x.rate for _, x in pts],
                    yerr=[[max(x.rate - x.low, 0) for _, x in pts], [max(x.high - x.rate, 0) for _, x in pts]],
                    fmt=mk, label=f"{mode} (ours)")
    ax.axhline(f.paper_r_delta, color="C0", ls=":", label=f"paper delta {f.paper_r_delta}")
    ax.axhline(f.paper_r_full, color="C1", ls=":", label=f"paper full {f.paper_r_full}")
    ax.set_ylim(0, 1.05), ax.set_xlabel("cycle"), ax.set_ylabel("valid-generation rate"), ax.legend(fontsize=7)
    integer_ticks(ax)
    save(fig, path)


def _per_cycle_plot(series: dict[str, list[tuple[int, float | None]]], ylabel: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, pts in series.items():
        pts = [(t, v) for t, v in pts if v is not None]
        if pts:
            ax.plot([t for t, _ in pts], [v for _, v in pts], "o-", label=label)
    ax.set_xlabel("cycle"), ax.set_ylabel(ylabel), ax.legend(fontsize=8)
    integer_ticks(ax)
    save(fig, path)


# ---------------------------------------------------------------------------------------------- Markdown


def _figure(figs: dict[str, str], name: str, alt: str) -> list[str]:
    return [f"![{alt}]({figs[name]})", ""] if name in figs else []


def render_markdown(s: Summary, figs: dict[str, str]) -> str:
    """SUMMARY.md from the summary's numbers; ``figs`` links the figures :func:`write_figures` wrote."""
    lines = [f"# {s.name}: our numbers beside the paper's", "",
             "The paper (arXiv 2605.30103): 22 cycles × 50 candidates × 3 LLMs = 3,300 architectures on six datasets, "
             "r_δ = 0.713 vs r_full = 0.506 (ratio 1.41). This reproduction: " + s.scale + f" Written {s.written}.", "",
             "## Runs", "", *_status_rows(s), "",
             *_walltime_section(s.wall_time),
             *_convergence_section(s.fig1, figs, "fig1_convergence"),
             # The mixed run of Figure 2 is a CE run too, with about 4x the generations per cycle: its
             # convergence diagnostics are the better-powered ones at small scale.
             *(_convergence_section(s.fig2_convergence, figs, "fig2_delta_vs_full",
                                    "### The same diagnostics on the Figure 2 run (`fig2_delta_vs_full`)")
               if s.fig2_convergence is not None else []),
             *_fig2_section(s.fig2, figs),
             *_ablation_section(s.ablation, figs),
             *_controls_section(s.controls, figs),
             *_proxy_section(s.proxy, figs),
             *_retrain_section(s.retrain),
             *_per_llm_section(s.per_llm),
             *_verdicts(s.verdicts)]
    return "\n".join(lines)


def _status_rows(s: Summary) -> list[str]:
    rows = ["| experiment | run directory | status | cycles done / planned | generations | trained | wall time |",
            "|---|---|---|---|---|---|---|"]
    for r in s.runs:
        if r.generations is None:
            rows.append(f"| {r.name} | `{r.run_dir}` | {r.status} | 0 / {r.cycles_planned} | – | – | – |")
            continue
        rows.append(f"| {r.name} | `{r.run_dir}` | {r.status} | {r.cycles_done} / {r.cycles_planned} | {r.generations} "
                    f"| {r.trained} | {duration(r.seconds)} |")
    return rows


def _walltime_section(w: WallTime) -> list[str]:
    out = ["## Wall time", ""]
    if not w.logged:
        return out + [f"No step log (`{w.log}`): the steps were not run by `cenas reproduce`.", ""]
    out += ["| step | executions | wall time | estimate | exit codes |", "|---|---|---|---|---|"]
    for r in w.rows:
        out.append(f"| {r.step} | {r.executions} | {duration(r.seconds)} | {duration(r.est_s)} "
                   f"| {', '.join(str(c) for c in r.exit_codes)} |")
    budget = f" against the budget of {duration(w.budget_s)}" if w.budget_s else ""
    verdict = ""
    if w.budget_s:
        verdict = " — within budget." if w.within_budget else " — OVER budget."
    out += ["", f"Total: {duration(w.total_s)} ({w.total_s:,.0f} s){budget}{verdict} First step started "
                f"{w.first_started}.", ""]
    return out


def _convergence_section(c: Convergence | None, figs: dict[str, str], run: str,
                         heading: str | None = None) -> list[str]:
    """Figure 1's table, trend test, Theorem 3 check and plot for one CE run."""
    out = [heading or f"## Figure 1 — convergence across cycles (`{run}`)", ""]
    if c is None:
        return out + ["Not run.", ""]
    out += ["| cycle | generated | trained | mean Q [95% CI] | γ_t | C_t [Wilson CI] | bound 1−(1−ρ₀)^t |",
            "|---|---|---|---|---|---|---|"]
    e = c.elite
    for i, r in enumerate(c.rows):
        ct = bd = DASH
        if e is not None and i < len(e.mass):
            ct = f"{fmt.value(e.mass[i])} {fmt.ci(e.low[i], e.high[i])}"
            bd = fmt.value(e.bound[i])
        out.append(f"| {r.cycle} | {r.generated} | {r.trained} | {fmt.value(r.mean_q)} {fmt.ci(r.q_low, r.q_high)} "
                   f"| {fmt.value(r.gamma)} | {ct} | {bd} |")
    out.append("")
    t = c.trend
    if t is not None:
        verdict = "increasing (p < 0.05)" if t.p_increasing < 0.05 else "no significant trend"
        out.append(f"Mann–Kendall on the per-cycle mean Q (Theorem 2): S = {t.s}, one-sided p(increasing) = "
                   f"{t.p_increasing:.3g}, Sen slope {t.sen_slope:+.4f} Q/cycle → {verdict}. "
                   f"Paper ({c.paper_cycles} cycles, {c.paper_architectures:,} architectures): a monotone quality "
                   "trend, consistent quantitatively.")
    else:
        out.append("Mann–Kendall: fewer than 3 cycles with trained candidates.")
    if e is not None:
        out.append(f"Theorem 3: ρ₀ = C₀ = {e.rho0:.3f}; C_t ≥ bound within its CI in {e.held_after_cycle0} of "
                   f"{max(len(e.mass) - 1, 0)} cycles after cycle 0. Paper: C_t levels off below the bound "
                   "(\"LoRA ceiling\"), consistent only in direction.")
    out += ["", *_figure(figs, f"convergence_{run}", run)]
    return out


def _fig2_section(f: DeltaVsFull | None, figs: dict[str, str]) -> list[str]:
    out = ["## Figure 2 — valid-generation rate, delta vs full code (`fig2_delta_vs_full`)", ""]
    if f is None:
        return out + ["Not run (or one of the two modes has no generations).", ""]
    out += ["| cycle | delta valid / generated | r_δ [Wilson CI] | full valid / generated | r_full [Wilson CI] |",
            "|---|---|---|---|---|"]

    def cell(x):
        return (DASH, DASH) if x is None else (f"{x.valid} / {x.n}", f"{fmt.value(x.rate)} {fmt.ci(x.low, x.high)}")

    for r in f.rows:
        (dn, dr), (fn, fr) = cell(r.delta), cell(r.full)
        out.append(f"| {r.cycle} | {dn} | {dr} | {fn} | {fr} |")
    late = []
    if f.late is not None:
        x = f.late
        late = [f"| cycles {x.first}–{x.last} only: r_δ / r_full | {x.delta_valid}/{x.delta_n} = "
                f"{fmt.value(x.delta_valid / x.delta_n)} vs {x.full_valid}/{x.full_n} = {fmt.value(x.full_valid / x.full_n)}, "
                f"ratio {fmt.value(x.ratio, 2)} | (22-cycle averages) |"]
    d, fu = f.delta, f.full
    out += ["", "| quantity | ours | paper |", "|---|---|---|",
            f"| r_δ (delta valid rate) | {fmt.value(d.rate)} {fmt.ci(d.low, d.high)}, n = {d.n} | {f.paper_r_delta} |",
            f"| r_full (full-code valid rate) | {fmt.value(fu.rate)} {fmt.ci(fu.low, fu.high)}, n = {fu.n} | {f.paper_r_full} |",
            f"| r_δ / r_full measured | {fmt.value(f.ratio, 2)} {fmt.ci(f.ratio_low, f.ratio_high, 2)} | {f.paper_ratio} |",
            *late,
            f"| Markov prediction (1−ε̂)^(n̄_δ−n̄_full), ε̂ from our full mode | {fmt.value(f.markov_ratio, 2)} "
            f"(ε̂ = {fmt.value(f.eps_hat, 5)}, n̄_δ = {fmt.value(f.delta_tokens, 0)}, n̄_full = {fmt.value(f.full_tokens, 0)} tokens) "
            f"| \"calibrated {f.paper_ratio_calibrated}\" (cannot be a ratio of rates: {f.paper_ratio_calibrated} × "
            f"{f.paper_r_full} > 1) |",
            f"| share of delta failures due to applying the edit | {fmt.value(f.apply_share, 2)} "
            f"({f.apply_failures} of {f.delta_failures}) | not reported |",
            "",
            f"Generations per mode needed to tell {f.paper_r_delta} from {f.paper_r_full} (α = 0.05, power 0.8): "
            f"{f.needed_per_mode}; we have {d.n} (delta) and {fu.n} (full)"
            + (" — fewer than needed, read the rates with their CIs." if min(d.n, fu.n) < f.needed_per_mode else "."),
            "", *_figure(figs, "fig2_delta_vs_full", "fig2")]
    return out


def _ablation_section(a: Ablation | None, figs: dict[str, str]) -> list[str]:
    out = ["## Ablation — the MinHash-Jaccard novelty filter (`fig1_convergence` vs `ablation_novelty`)", ""]
    if a is None:
        return out + ["Not run (needs both runs).", ""]
    out += ["Diversity = mean pairwise Jaccard similarity of the programs accepted in a cycle (lower = more diverse).",
            "", "| cycle | with filter: similarity | near-duplicates rejected | without filter: similarity | accepted |",
            "|---|---|---|---|---|"]
    for r in a.rows:
        dups = DASH if r.with_duplicates is None else r.with_duplicates
        acc = DASH if r.without_accepted is None else r.without_accepted
        out.append(f"| {r.cycle} | {fmt.value(r.with_similarity)} | {dups} | {fmt.value(r.without_similarity)} | {acc} |")
    out += ["", f"Mean over cycles: {fmt.value(a.mean_with)} with the filter, {fmt.value(a.mean_without)} without. Paper "
            "(result 5): the filter prevents mode collapse — persistent novel admissions, consistent quantitatively.",
            "", *_figure(figs, "ablation_novelty", "ablation")]
    return out


def _controls_section(c: Controls | None, figs: dict[str, str]) -> list[str]:
    out = ["## Controls — can the gains be credited to the CE update?", ""]
    if c is None:
        return out + ["Not run (needs the CE run and at least one control).", ""]
    cycles = sorted({p.cycle for r in c.runs for p in r.per_cycle})
    out += ["Mean Q per cycle [95% CI] (Q = proxy accuracy / the corpus's median accuracy).", "",
            "| cycle | " + " | ".join(r.label for r in c.runs) + " |", "|---|" + "---|" * len(c.runs)]
    for t in cycles:
        cells = []
        for r in c.runs:
            p = next((p for p in r.per_cycle if p.cycle == t), None)
            cells.append(DASH if p is None or p.mean_q is None else f"{fmt.value(p.mean_q)} {fmt.ci(p.q_low, p.q_high)}")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    out += ["", "| run | valid rate | mean Q over cycles | best Q | Mann–Kendall p(increasing) | Sen slope |",
            "|---|---|---|---|---|---|"]
    for r in c.runs:
        slope = f"{r.sen_slope:+.4f}" if r.sen_slope is not None else DASH
        out.append(f"| {r.label} | {fmt.value(r.valid_rate)} | {fmt.value(r.mean_q)} | {fmt.value(r.best_q)} "
                   f"| {fmt.value(r.p_increasing)} | {slope} |")
    out += ["", *_figure(figs, "controls", "controls")]
    return out


def _proxy_section(p: ProxyReliability | None, figs: dict[str, str]) -> list[str]:
    out = ["## Table — proxy reliability (`table_proxy_reliability`, result 6)", ""]
    if p is None:
        return out + ["Not run.", ""]
    out += [f"{p.architectures} corpus architectures × {p.seeds} seeds at {p.proxy_epochs:g} epoch(s), ground truth "
            f"at {p.truth_epochs:g} epochs (dataset {p.dataset}).", "",
            "| quantity | ours | paper |", "|---|---|---|",
            f"| σ²_arch | {fmt.value(p.sigma2_arch, 5)} | – |",
            f"| σ²_noise | {fmt.value(p.sigma2_noise, 5)} | – |",
            f"| SNR (one run) | {fmt.value(p.snr, 2)} {fmt.ci(p.snr_low, p.snr_high, 2)} | – |"]
    for c in p.comparisons:
        paper = (f"Qwen {c.paper_spearman} measured; DeepSeek not significant (low SNR)"
                 if c.paper_spearman is not None else DASH)
        out.append(f"| ρ_S {c.name}: predicted / measured | {fmt.value(c.predicted)} / {fmt.value(c.measured)} "
                   f"{fmt.ci(c.low, c.high)} | {paper} |")
    if p.ceiling is not None:
        g = p.ceiling
        out += ["", f"Ceiling effect of `{g.run_dir}` ({g.scores_from} scores, {g.seeds} seeds per candidate): "
                "as the search concentrates, σ²_arch and so the SNR and ρ_S should fall.", "",
                "| cycle | K | σ²_arch | SNR | ρ_S retest predicted / measured |", "|---|---|---|---|---|"]
        for r in g.rows:
            label = "corpus" if r.cycle < 0 else str(r.cycle)
            if not r.analysed:
                out.append(f"| {label} | {r.k} | – | – | ({r.note or 'no analysis'}) |")
                continue
            out.append(f"| {label} | {r.k} | {fmt.value(r.sigma2_arch, 5)} | {fmt.value(r.snr, 2)} "
                       f"| {fmt.value(r.retest_predicted)} / {fmt.value(r.retest_measured)} |")
        if g.trend_s is not None:
            out += ["", f"Mann–Kendall on σ²_arch over cycles: S = {g.trend_s}, p(two-sided) = {fmt.value(g.trend_p)}, "
                    f"Sen slope {fmt.value(g.trend_slope, 5)}/cycle."]
    out += ["", *_figure(figs, "table_proxy_reliability", "proxy_snr"), *_figure(figs, "ceiling_effect", "ceiling"), ""]
    return out


def _retrain_section(r: Retrain | None) -> list[str]:
    out = ["## Retrain — proxy vs long budget (`cenas retrain`)", ""]
    if r is None:
        return out + ["Not run.", ""]
    rho = (f"{fmt.value(r.spearman)} {fmt.ci(r.spearman_low, r.spearman_high)}, p = {r.spearman_p:.2g}"
           if r.spearman is not None else f"– ({r.note})")
    best = f"{fmt.value(r.best_accuracy)} (`{r.best_id}`)" if r.best_id is not None else DASH
    return out + ["| quantity | ours | paper (NNGPT) |", "|---|---|---|",
                  f"| budgets | {r.proxy_epochs:g} epoch proxy vs {r.epochs:g} epochs × {r.seeds} seed(s), test split "
                  "| 1 vs 50 epochs |",
                  f"| architectures retrained | {r.retrained} ({r.trained} trained) | – |",
                  f"| Spearman ρ_S [95% CI] | {rho} | {r.paper_spearman} |",
                  f"| best test accuracy | {best} | 85.5% (CIFAR-10, first epoch) |",
                  ""]


def _per_llm_section(p: PerLlm | None) -> list[str]:
    if p is None:
        return []
    out = ["## Per LLM — delta generation (`fig1_convergence`, delta mode)", "",
           "| LLM | delta valid rate [Wilson CI] | mean Q (ours) / mean first-epoch accuracy (paper) "
           "| best proxy accuracy |", "|---|---|---|---|"]
    for r in p.rows:
        if r.delta is None:
            out.append(f"| `{r.llm}` (ours) | not run | – | – |")
            continue
        out.append(f"| `{r.llm}` (ours) | {fmt.value(r.delta.rate)} {fmt.ci(r.delta.low, r.delta.high)} | {fmt.value(r.mean_q)} "
                   f"| {fmt.value(r.best_accuracy)} |")
    for name, rate, acc in p.paper:
        out.append(f"| {name} (paper) | {rate} | {acc} | – |")
    return out + [""]


def _verdicts(v: Verdicts) -> list[str]:
    rows = ["## The paper's six verdicts beside ours", "",
            "| the paper's verdict (22 cycles, 3 LLMs, 3,300 architectures) | ours (this reproduction) |", "|---|---|"]

    def each(parts: list[str]) -> str:
        return "; ".join(parts) or DASH

    rows.append("| monotone quality trend — consistent quantitatively | " + each(
        [f"{run}: Sen slope {t.sen_slope:+.4f}/cycle, p(increasing) = {t.p_increasing:.3g} over {t.n} cycles"
         for run, t in v.trends]) + " |")
    rows.append("| persistent novel admissions — consistent quantitatively | " + each(
        [f"{run}: accepted per cycle {list(acc)}" for run, acc in v.accepted]) + " |")
    rows.append("| elite-concentration plateau (C_t below the bound, \"LoRA ceiling\") — direction only | " + each(
        [f"{run}: C_t = {[round(x, 2) for x in mass]} vs bound {[round(x, 2) for x in bound]}"
         for run, mass, bound in v.elite_mass]) + " |")
    if v.proxy_run:
        rows.append(f"| DeepSeek's proxy ranking not significant under low SNR — direction only | SNR {fmt.value(v.snr, 2)}, "
                    f"ρ_S measured {fmt.value(v.rho_measured)} (p = {fmt.value(v.rho_p, 3)}) vs predicted {fmt.value(v.rho_predicted)} |")
        rows.append(f"| Qwen's proxy Spearman {v.paper_qwen_spearman} — departs from the calibrated value | measured "
                    f"{fmt.value(v.rho_measured)} vs predicted {fmt.value(v.rho_predicted)} |")
    else:
        rows += ["| DeepSeek's proxy ranking not significant under low SNR — direction only | – |",
                 f"| Qwen's proxy Spearman {v.paper_qwen_spearman} — departs from the calibrated value | – |"]
    rows.append(f"| delta/full ratio 1.41 measured vs 2.23 \"calibrated\" — departs | measured "
                f"{fmt.value(v.ratio_measured, 2)}, Markov prediction {fmt.value(v.ratio_predicted, 2)} |")
    if v.ablation_run:
        rows.append(f"| (result 5) the filter prevents mode collapse | mean similarity {fmt.value(v.similarity_with)} "
                    f"with vs {fmt.value(v.similarity_without)} without |")
    return rows + [""]
