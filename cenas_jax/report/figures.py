"""PNG figures of a run's diagnostics (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cenas_jax.report.analysis import RunAnalysis, lineage_chain
from cenas_jax.report.plotting import pyplot


def cycle_axis(ax, cycles) -> None:
    """Integer cycle ticks: every cycle when there are few (a one-cycle run gets the one tick), else integers only."""
    from matplotlib.ticker import MaxNLocator

    cs = sorted({int(c) for c in cycles})
    if not cs:
        return
    if len(cs) <= 12:
        ax.set_xticks(cs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(cs[0] - 0.5, cs[-1] + 0.5)


def count_axis(ax) -> None:
    """A count axis ticks whole numbers (no 2.5 generations)."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(fig, ax, handles=None, labels=None, fontsize: int = 7) -> None:
    """The legend to the right of the axes, clear of the title and the data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _save(fig, path: Path) -> bool:
    """Tight bounding box (legends outside the axes included), write the PNG, free the figure."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return True


FIGURES = ("quality", "elite_mass", "valid_rate", "errors", "novelty", "lineage")


def build_figure(name: str, a: RunAnalysis):
    """The matplotlib figure ``name`` of the run, or None when the run has nothing to draw in it."""
    return {"quality": _quality, "elite_mass": _elite_mass, "valid_rate": _valid_rate, "errors": _errors,
            "novelty": _novelty, "lineage": _lineage}[name](a)


def write_figures(a: RunAnalysis, out_dir: Path) -> dict[str, Path]:
    """Write every figure the report links; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FIGURES:
        fig = build_figure(name, a)
        if fig is not None:
            paths[name] = out_dir / f"{name}.png"
            _save(fig, paths[name])
    return paths


def clip_quality_axis(ax, *series) -> None:
    """Fit the y axis to the plotted Q values (means, quantiles, γ_t), not to their confidence bands.

    A cycle with two trained candidates has a t-interval ten times wider than every Q of the
    run; drawn to scale it flattens the whole figure. Q is a ratio of accuracies, so the axis
    starts at 0 (lower only if some Q is negative); a band that runs past the top is cut there.
    """
    vals = np.concatenate([np.asarray(s, dtype=float).ravel() for s in series]) if series else np.array([])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    top = 1.25 * float(vals.max()) if vals.max() > 0 else 1.0
    ax.set_ylim(min(0.0, float(vals.min())), top)


def _quality(a: RunAnalysis):
    cs = [c for c in a.cycles if c.qualities]
    if not cs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    t = np.array([c.cycle for c in cs])
    m = np.array([c.mean_q for c in cs], dtype=float)
    lo = np.array([c.q_low if c.q_low is not None else np.nan for c in cs], dtype=float)
    hi = np.array([c.q_high if c.q_high is not None else np.nan for c in cs], dtype=float)
    ax.plot(t, m, "o-", label="mean Q (95% CI)")
    ax.fill_between(t, lo, hi, alpha=0.2)
    q = np.array([c.quantiles for c in cs], dtype=float)
    ax.plot(t, q[:, 1], "--", color="gray", label="median Q")
    ax.fill_between(t, q[:, 0], q[:, 2], color="gray", alpha=0.1, label="interquartile")
    g = [(c.cycle, c.gamma) for c in cs if c.gamma is not None]
    if g:
        ax.step([x for x, _ in g], [y for _, y in g], where="mid", color="C3", label=r"$\gamma_t$")
    ax.plot(t, [c.best_so_far for c in cs], ":", color="C2", label="best so far")
    baseline = []
    if a.corpus_best_q is not None:  # the seed corpus: the baseline every candidate is measured against
        ax.axhline(a.corpus_best_q, color="k", ls="-.", lw=1, label=f"best corpus program (Q {a.corpus_best_q:.3f})")
        ax.axhline(1.0, color="k", ls=":", lw=0.8, label="median corpus program (Q 1)")
        baseline = [a.corpus_best_q, 1.0]
    clip_quality_axis(ax, m, q, [y for _, y in g], [c.best_so_far for c in cs], baseline)
    cycle_axis(ax, t)
    ax.set_xlabel("cycle t")
    ax.set_ylabel("quality Q (normalised accuracy)")
    title = "Quality per cycle (Theorem 2: E[Q] non-decreasing)"
    if a.trend is not None:
        title += f"\nMann-Kendall S={a.trend.s}, p(increasing)={a.trend.p_increasing:.3f}"
    ax.set_title(title, fontsize=9)
    legend_outside(fig, ax)
    return fig


def _elite_mass(a: RunAnalysis):
    ec = a.elite_check
    if ec is None:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    t = np.arange(len(ec.mass))
    yerr = np.clip([ec.mass - ec.low, ec.high - ec.mass], 0, None)  # Wilson limits can sit 1e-17 past the rate
    ax.errorbar(t, ec.mass, yerr=yerr, fmt="o-", capsize=3, label=r"$C_t$ (Wilson 95%)")
    ax.plot(t, ec.bound, "--", color="C3", label=r"bound $1-(1-\rho_0)^t$")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cycle t")
    ax.set_ylabel(r"elite mass $C_t = P(Q \geq \gamma^*)$")
    ax.set_title(rf"Elite mass vs Theorem 3 ($\rho_0$ = {ec.rho0:.3f}, $\gamma^*=\gamma_0$)", fontsize=9)
    cycle_axis(ax, t)
    legend_outside(fig, ax)
    return fig


def _valid_rate(a: RunAnalysis):
    if not a.modes:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (mode, d) in enumerate(sorted(a.modes.items())):
        pts = [(t, v) for t, v in d["per_cycle"].items() if v is not None]
        if not pts:
            continue
        t = np.array([p[0] for p in pts]) + (i - 0.5) * 0.08
        r = np.array([p[1]["rate"] for p in pts])
        lo = np.array([p[1]["low"] for p in pts])
        hi = np.array([p[1]["high"] for p in pts])
        yerr = np.clip([r - lo, hi - r], 0, None)
        ax.errorbar(t, r, yerr=yerr, fmt="o-", capsize=3, label=f"{mode}: overall {d['rate']:.2f}")
    ax.axhline(0.506, color="gray", ls=":", label="paper full 0.506")
    ax.axhline(0.713, color="gray", ls="--", label="paper delta 0.713")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cycle t")
    ax.set_ylabel("valid-generation rate (Wilson 95%)")
    ax.set_title("Valid-generation rate per mode (Corollary 6)", fontsize=9)
    cycle_axis(ax, [c.cycle for c in a.cycles])
    legend_outside(fig, ax)
    return fig


def _errors(a: RunAnalysis):
    kinds = sorted({k for c in a.cycles for k in c.error_kinds})
    if not kinds:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    t = np.array([c.cycle for c in a.cycles])
    bottom = np.zeros(len(t))
    for k in kinds:
        v = np.array([c.error_kinds.get(k, 0) for c in a.cycles], dtype=float)
        ax.bar(t, v, bottom=bottom, label=k)
        bottom += v
    ax.set_xlabel("cycle t")
    ax.set_ylabel("generations")
    ax.set_title("Error kinds per cycle (duplicate = rejected by the novelty filter)", fontsize=9)
    cycle_axis(ax, t)
    count_axis(ax)
    legend_outside(fig, ax)
    return fig


def _novelty(a: RunAnalysis):
    if not a.cycles:
        return None
    plt = pyplot()
    fig, ax1 = plt.subplots(figsize=(6.4, 4))
    t = np.array([c.cycle for c in a.cycles])
    ax1.bar(t, [c.duplicates for c in a.cycles], color="C1", alpha=0.6, label="novelty rejections")
    ax1.set_xlabel("cycle t")
    ax1.set_ylabel("rejections")
    ax2 = ax1.twinx()
    div = [c.diversity if c.diversity is not None else np.nan for c in a.cycles]
    ax2.plot(t, div, "o-", color="C0", label="mean pairwise Jaccard (accepted)")
    ax2.set_ylabel("mean pairwise Jaccard")
    ax2.set_ylim(0, 1)
    ax1.set_title("Novelty filter (result 5): rejections and diversity", fontsize=9)
    cycle_axis(ax1, t)
    count_axis(ax1)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # Right of the axes, beyond the twin axis's labels: clear of the title and the data.
    ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.15, 1.0), borderaxespad=0.0)
    return fig


# Each lineage is shifted sideways by its rank and drawn in its own colour, marker and dash, so two
# lineages through the same ancestors stay visible side by side instead of one covering the other.
_LINEAGE_STYLES = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", (0, (5, 1, 1, 1))))
LINEAGE_SHIFT = 0.07


def _lineage(a: RunAnalysis):
    if not a.best:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    n = min(len(a.best), 5)
    roots: dict[str, tuple[float, float]] = {}
    xs_all: list[int] = [-1]
    for i, b in enumerate(a.best[:n]):
        chain = lineage_chain(a, b["id"])
        shift = (i - (n - 1) / 2) * LINEAGE_SHIFT
        pts = []
        for cid in chain:
            node = a.lineage.get(cid, {})
            q = node.get("quality")
            cyc = node.get("cycle") if node.get("cycle") is not None else -1
            pts.append((cyc + shift, q if q is not None else np.nan))
            xs_all.append(cyc)
            if cyc == -1 and q is not None:
                roots[cid] = (cyc, q)
        marker, dash = _LINEAGE_STYLES[i % len(_LINEAGE_STYLES)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls=dash, color=f"C{i}", ms=5,
                label=f"#{i + 1} {b['id']}")
    # The seed-corpus roots: every lineage starts from a corpus program (full programs from the corpus's
    # own elites, delta edits from a corpus parent); the best corpus program is drawn as the baseline.
    for cid, (x, y) in roots.items():
        ax.plot([x], [y], marker="*", ms=13, color="k", ls="none", zorder=5)
        ax.annotate(cid.split("-", 2)[-1], (x, y), xytext=(6, -3), textcoords="offset points", fontsize=6)
    if a.corpus_best_q is not None:
        ax.axhline(a.corpus_best_q, color="k", ls="-.", lw=1, label=f"best corpus program (Q {a.corpus_best_q:.3f})")
        best_root = max(a.corpus, key=lambda c: c["quality"] if c["quality"] is not None else -1.0)
        if best_root["id"] not in roots and best_root["quality"] is not None:
            ax.plot([-1], [best_root["quality"]], marker="*", ms=13, color="k", ls="none", zorder=5)
            ax.annotate(best_root["name"], (-1, best_root["quality"]), xytext=(6, -3), textcoords="offset points", fontsize=6)
    ax.plot([], [], marker="*", ms=10, color="k", ls="none", label="seed corpus (cycle -1)")
    cycle_axis(ax, xs_all)
    ax.set_xlabel("cycle (-1 = seed corpus)")
    ax.set_ylabel("quality Q")
    ax.set_title("Lineage of the best candidates (delta parents back to the corpus)", fontsize=9)
    legend_outside(fig, ax, fontsize=6)
    return fig
