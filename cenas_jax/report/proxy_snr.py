"""Figures and text tables of the proxy-reliability experiment (result 6, ``cenas proxy-snr``).

- :func:`plot_rho_vs_snr`: ρ_S against the SNR, result 6's closed-form curves
  beside the measured points with their CIs (``proxy_snr.png``);
- :func:`plot_ceiling`: σ²_arch, σ²_noise and ρ_S cycle by cycle of a run
  (``ceiling.png``);
- :func:`format_analysis`, :func:`format_ceiling`: the same as plain text.

Everything drawn or printed is a number of ``proxy_snr.analysis`` (DESIGN.md §6).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cenas_jax import theory
from cenas_jax.proxy_snr.analysis import CeilingResult, Comparison, ProxySNRAnalysis
from cenas_jax.report import fmt
from cenas_jax.report.plotting import pyplot

# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

_SNR_FLOOR = 1e-3  # where an SNR of 0 (clipped σ²_arch) is drawn on the log axis
_SNR_CEIL = 1e3


def _x(snr: float) -> float:
    return float(min(max(snr, _SNR_FLOOR), _SNR_CEIL))


def _point(ax, comp: Comparison, snr_ci, color: str, marker: str, label: str) -> None:
    m = comp.measured
    if m is None or math.isnan(comp.snr_used):
        return
    x = _x(comp.snr_used)
    xerr = None
    if snr_ci is not None and not any(math.isnan(v) for v in snr_ci):
        lo, hi = _x(snr_ci[0]), _x(snr_ci[1])
        xerr = [[max(x - lo, 0.0)], [max(hi - x, 0.0)]]
    yerr = None
    if not math.isnan(m.ci_low):
        yerr = [[max(m.estimate - m.ci_low, 0.0)], [max(m.ci_high - m.estimate, 0.0)]]
    ax.errorbar([x], [m.estimate], xerr=xerr, yerr=yerr, fmt=marker, color=color, capsize=3, label=label)


def plot_rho_vs_snr(a: ProxySNRAnalysis, path: str | Path, ceiling: CeilingResult | None = None) -> Path:
    """ρ_S against the SNR: result 6's curves (truth, retest) and the measured points with CIs.

    The x position of a point is the SNR its prediction uses (S·SNR for the
    S-seed mean); horizontal bars are the SNR's bootstrap CI, vertical bars the
    Spearman's. An SNR of 0 is drawn at 1e-3. Ceiling-effect cycles, if given,
    are added as retest points labelled by cycle.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    grid = np.logspace(np.log10(_SNR_FLOOR), np.log10(_SNR_CEIL), 300)
    ax.plot(grid, theory.predicted_spearman_from_snr(grid, kind="truth"), "-", color="C0",
            label=r"closed form, proxy vs truth: $\frac{6}{\pi}\arcsin\frac{\sqrt{r}}{2}$")
    ax.plot(grid, theory.predicted_spearman_from_snr(grid, kind="retest"), "--", color="C1",
            label=r"closed form, retest: $\frac{6}{\pi}\arcsin\frac{r}{2}$, $r=\frac{SNR}{1+SNR}$")
    snr_ci = a.snr.snr_ci
    S = a.snr.S
    styles = {
        "truth_single": ("C0", "o", "measured: proxy seed 0 vs truth"),
        "truth_mean": ("C2", "s", f"measured: mean of {S} seeds vs truth (at {S}·SNR)"),
        "retest": ("C1", "^", "measured: seed 0 vs seed 1"),
    }
    for comp in a.comparisons:
        color, marker, label = styles[comp.name]
        ci = snr_ci if comp.name != "truth_mean" else (a.snr.snr_mean_ci or None)
        _point(ax, comp, ci, color, marker, label)
    if ceiling is not None:
        for r in ceiling.rows:
            if r.analysis is None:
                continue
            c = r.analysis.comparison("retest")
            if c.measured is None or math.isnan(c.snr_used):
                continue
            ax.plot([_x(c.snr_used)], [c.measured.estimate], "x", color="C3")
            ax.annotate(f"c{r.cycle}" if r.cycle >= 0 else "L", (_x(c.snr_used), c.measured.estimate),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot([], [], "x", color="C3", label="run cycles (retest)")
    ax.set_xscale("log")
    ax.set_xlim(_SNR_FLOOR, _SNR_CEIL)
    ax.set_ylim(-0.4, 1.02)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel(r"SNR = $\sigma^2_{arch} / \sigma^2_{noise}$ (log)")
    ax.set_ylabel(r"Spearman $\rho_S$")
    est = a.snr
    ax.set_title(
        f"Proxy reliability (result 6): K={est.K}, S={est.S}, "
        f"SNR={est.snr:.3g}" + (f" [{est.snr_ci[0]:.3g}, {est.snr_ci[1]:.3g}]" if est.snr_ci else ""),
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_ceiling(c: CeilingResult, path: str | Path) -> bool:
    """Two panels per cycle: σ²_arch and σ²_noise with CIs; measured and predicted ρ_S. False if nothing to draw."""
    rows = [r for r in c.rows if r.analysis is not None]
    if not rows:
        return False
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for ds in sorted({r.dataset for r in rows}, key=str):
        rs = [r for r in rows if r.dataset == ds]
        t = np.array([r.cycle for r in rs])
        tag = f" ({ds})" if len({r.dataset for r in rows}) > 1 else ""
        for attr, ci_attr, style, name in (("sigma2_arch", "sigma2_arch_ci", "o-", r"$\sigma^2_{arch}$"),
                                           ("sigma2_noise", "sigma2_noise_ci", "s--", r"$\sigma^2_{noise}$")):
            v = np.array([getattr(r.analysis.snr, attr) for r in rs])
            cis = [getattr(r.analysis.snr, ci_attr) for r in rs]
            if all(ci is not None for ci in cis):
                lo = np.array([ci[0] for ci in cis])
                hi = np.array([ci[1] for ci in cis])
                a1.errorbar(t, v, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], fmt=style, capsize=3,
                            label=name + tag)
            else:
                a1.plot(t, v, style, label=name + tag)
        for name, style, color in (("retest", "^", "C1"), ("truth_single", "o", "C0")):
            if rs[0].analysis.truth is None and name != "retest":
                continue
            meas = np.array([r.analysis.comparison(name).measured.estimate
                             if r.analysis.comparison(name).measured is not None else np.nan for r in rs])
            pred = np.array([r.analysis.comparison(name).predicted for r in rs])
            a2.plot(t, meas, style + "-", color=color, label=f"measured {name}{tag}")
            a2.plot(t, pred, style + ":", color=color, mfc="none", label=f"predicted {name}{tag}")
    from matplotlib.ticker import MaxNLocator

    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_xlabel("cycle (-1: corpus)")
    a1.set_ylabel("variance (accuracy²)")
    title = "Variance components per cycle"
    if c.sigma2_arch_trend is not None:
        title += f"\nMann-Kendall on $\\sigma^2_{{arch}}$: S={c.sigma2_arch_trend.s}, p={c.sigma2_arch_trend.p_two_sided:.3f}"
    a1.set_title(title, fontsize=9)
    a1.legend(fontsize=7)
    a2.set_xlabel("cycle (-1: corpus)")
    a2.set_ylabel(r"Spearman $\rho_S$")
    a2.set_ylim(-0.4, 1.02)
    a2.set_title(f"Ceiling effect ({c.scores_from} scores, S={c.seeds})", fontsize=9)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def _f(v: float | None, spec: str = ".3f") -> str:
    return fmt.num(v, spec, missing="n/a")


def _ci(ci: tuple[float, float] | None, spec: str = ".3f") -> str:
    return fmt.interval(*ci, spec, missing="n/a") if ci is not None else ""


def format_analysis(a: ProxySNRAnalysis) -> str:
    """A plain-text table of the ANOVA and the predicted vs measured ρ_S."""
    e = a.snr
    pct = f"{a.ci:.0%}"
    lines = [
        f"K={e.K} architectures x S={e.S} proxy seeds" + (f", T={a.truth.shape[1]} truth seed(s)" if a.truth is not None else ""),
        f"  sigma2_arch  = {_f(e.sigma2_arch, '.3e')} {_ci(e.sigma2_arch_ci, '.3e')}" + ("  (clipped at 0)" if e.clipped else ""),
        f"  sigma2_noise = {_f(e.sigma2_noise, '.3e')} {_ci(e.sigma2_noise_ci, '.3e')}",
        f"  SNR (one run) = {_f(e.snr, '.3g')} {_ci(e.snr_ci, '.3g')}   SNR ({e.S}-seed mean) = {_f(e.snr_mean, '.3g')}",
        f"  F = {_f(e.f_statistic, '.3g')}, p(no architecture signal) = "
        + (_f(e.p_value, '.3g') if e.msw > 0 else "n/a"),
    ]
    if a.truth_snr is not None:
        lines.append(f"  truth runs: SNR = {_f(a.truth_snr.snr, '.3g')} {_ci(a.truth_snr.snr_ci, '.3g')}")
    lines.append(f"rho_S ({pct} CIs)             predicted  [CI]                measured  [CI]               p")
    for c in a.comparisons:
        m = c.measured
        meas = f"{_f(m.estimate)}  {_ci((m.ci_low, m.ci_high))}  {_f(m.p_value, '.2g')}" if m else f"n/a ({c.measured_error})"
        extra = f"  (noisy truth: {_f(c.predicted_noisy_truth)})" if c.predicted_noisy_truth is not None else ""
        if c.implied_q_correlation is not None:
            extra += f"  Pearson {_f(c.measured_pearson)}, implied corr(Q_proxy, Q_truth) {_f(c.implied_q_correlation)}"
        lines.append(f"  {c.name:<12} {_f(c.predicted):>14}  {_ci(c.predicted_ci):<18}  {meas}{extra}")
        lines.append(f"  {'':<12} {c.description}")
    return "\n".join(lines)


def format_ceiling(c: CeilingResult) -> str:
    lines = [f"ceiling effect of {c.run_dir} ({c.scores_from} scores, S={c.seeds}):",
             "  cycle dataset        K  sigma2_arch  sigma2_noise  SNR      pred retest  meas retest"
             + ("  pred truth  meas truth" if c.with_truth else "")]
    for r in c.rows:
        label = "L" if r.cycle < 0 else str(r.cycle)
        if r.analysis is None:
            lines.append(f"  {label:>5} {str(r.dataset):<12} {r.K:>3}  ({r.note})")
            continue
        e = r.analysis.snr
        rt = r.analysis.comparison("retest")
        line = (f"  {label:>5} {str(r.dataset):<12} {r.K:>3}  {_f(e.sigma2_arch, '.3e'):>11}  {_f(e.sigma2_noise, '.3e'):>12}"
                f"  {_f(e.snr, '.3g'):>7}  {_f(rt.predicted):>11}  {_f(rt.measured.estimate if rt.measured else None):>11}")
        if c.with_truth:
            tr = r.analysis.comparison("truth_single")
            line += f"  {_f(tr.predicted):>10}  {_f(tr.measured.estimate if tr.measured else None):>10}"
        lines.append(line)
    if c.sigma2_arch_trend is not None:
        lines.append(f"  Mann-Kendall on sigma2_arch over cycles: S={c.sigma2_arch_trend.s}, p(two-sided)={c.sigma2_arch_trend.p_two_sided:.3g}, "
                     f"Sen slope={c.sigma2_arch_trend.sen_slope:.3g}/cycle")
    return "\n".join(lines)
