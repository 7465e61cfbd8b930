"""PNG figures of a run's diagnostics (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cenas_jax.report.analysis import RunAnalysis, lineage_chain


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> bool:
    """Integer ticks on the cycle axis, tight layout, write the PNG, free the figure."""
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return True


def write_figures(a: RunAnalysis, out_dir: Path) -> dict[str, Path]:
    """Write every figure the report links; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fn in (("quality", _quality), ("elite_mass", _elite_mass), ("valid_rate", _valid_rate),
                     ("errors", _errors), ("novelty", _novelty), ("lineage", _lineage)):
        p = out_dir / f"{name}.png"
        if fn(a, p):
            paths[name] = p
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


def _quality(a: RunAnalysis, path: Path) -> bool:
    cs = [c for c in a.cycles if c.qualities]
    if not cs:
        return False
    plt = _plt()
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
    clip_quality_axis(ax, m, q, [y for _, y in g], [c.best_so_far for c in cs])
    ax.set_xlabel("cycle t")
    ax.set_ylabel("quality Q (normalised accuracy)")
    title = "Quality per cycle (Theorem 2: E[Q] non-decreasing)"
    if a.trend is not None:
        title += f"\nMann-Kendall S={a.trend.s}, p(increasing)={a.trend.p_increasing:.3f}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _elite_mass(a: RunAnalysis, path: Path) -> bool:
    ec = a.elite_check
    if ec is None:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    t = np.arange(len(ec.mass))
    yerr = np.clip([ec.mass - ec.low, ec.high - ec.mass], 0, None)  # Wilson limits can sit 1e-17 past the rate
    ax.errorbar(t, ec.mass, yerr=yerr, fmt="o-", capsize=3, label=r"$C_t$ (Wilson 95%)")
    ax.plot(t, ec.bound, "--", color="C3", label=r"bound $1-(1-\rho_0)^t$")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cycle t")
    ax.set_ylabel(r"elite mass $C_t = P(Q \geq \gamma^*)$")
    ax.set_title(rf"Elite mass vs Theorem 3 ($\rho_0$ = {ec.rho0:.3f}, $\gamma^*=\gamma_0$)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _valid_rate(a: RunAnalysis, path: Path) -> bool:
    if not a.modes:
        return False
    plt = _plt()
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
    ax.legend(fontsize=7)
    return _save(fig, path)


def _errors(a: RunAnalysis, path: Path) -> bool:
    kinds = sorted({k for c in a.cycles for k in c.error_kinds})
    if not kinds:
        return False
    plt = _plt()
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
    ax.legend(fontsize=7)
    return _save(fig, path)


def _novelty(a: RunAnalysis, path: Path) -> bool:
    if not a.cycles:
        return False
    plt = _plt()
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
    fig.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def _lineage(a: RunAnalysis, path: Path) -> bool:
    if not a.best:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    drawn = set()
    for i, b in enumerate(a.best[:5]):
        chain = lineage_chain(a, b["id"])
        pts = []
        for cid in chain:
            node = a.lineage.get(cid, {})
            q = node.get("quality")
            pts.append((node.get("cycle", -1) if node.get("cycle") is not None else -1, q if q is not None else np.nan))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=f"#{i + 1} {b['id']}")
        for cid, (x, y) in zip(chain, pts):
            if cid not in drawn and not np.isnan(y):
                ax.annotate(cid.split("-")[-2] if cid.count("-") >= 2 else cid, (x, y), fontsize=6)
                drawn.add(cid)
    ax.set_xlabel("cycle (-1 = seed corpus)")
    ax.set_ylabel("quality Q")
    ax.set_title("Lineage of the best candidates (delta parents)", fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, path)
