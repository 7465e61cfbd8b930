"""`cenas report RUN_DIR`: figures and a Markdown report, read from the run store."""

from __future__ import annotations

import math
from pathlib import Path

from cenas_jax.report.analysis import PAPER, RunAnalysis, analyse, lineage_chain
from cenas_jax.report.figures import write_figures


def _f(x: float | None, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}"


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Analyse the run, write PNGs and ``report.md`` into ``out_dir`` (default RUN_DIR/report); returns the .md path."""
    a = analyse(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "report"
    figs = write_figures(a, out)
    md = render(a, {k: p.name for k, p in figs.items()})
    path = out / "report.md"
    path.write_text(md)
    return path


def render(a: RunAnalysis, figs: dict[str, str]) -> str:
    L: list[str] = []
    cfg = a.config
    s = cfg.get("search", {})
    L.append(f"# cenas_jax run report: `{a.run_dir.name}`\n")
    L.append(f"Model `{cfg.get('llm', {}).get('model', {}).get('name')}`, dataset `{cfg.get('data', {}).get('name')}`, "
             f"{len(a.cycles)} of {s.get('cycles')} cycles × {s.get('candidates_per_cycle')} candidates, mode "
             f"`{s.get('mode')}`, elite fraction ρ = {s.get('elite_rho')}, novelty τ = {s.get('novelty', {}).get('threshold')}.\n")
    if a.reference:
        L.append("Quality Q = proxy accuracy / the median accuracy of the seed corpus on the same dataset "
                 "(reference: " + ", ".join(f"{k} {v:.3f}" for k, v in a.reference.items()) + ").\n")

    L.append("## Per cycle\n")
    L.append("| cycle | generated | valid | accepted | dup. rejected | trained | mean Q [95% CI] | median Q | γ_t | best so far | elites | diversity (mean Jaccard) | distinct structures | s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in a.cycles:
        ci = f"{_f(c.mean_q)} [{_f(c.q_low)}, {_f(c.q_high)}]" if c.mean_q is not None else "–"
        med = _f(c.quantiles[1]) if c.quantiles else "–"
        L.append(f"| {c.cycle} | {c.generated} | {c.valid} | {c.accepted} | {c.duplicates} | {c.trained} | {ci} | {med} | "
                 f"{_f(c.gamma)} | {_f(c.best_so_far)} | {len(c.elites)} | {_f(c.diversity, 2)} | {c.distinct_structures} | {_f(c.seconds, 0)} |")
    L.append("")
    for key, caption in (("quality", "Quality per cycle"), ("elite_mass", "Elite mass against Theorem 3's bound"),
                         ("valid_rate", "Valid-generation rate per mode"), ("errors", "Error kinds per cycle"),
                         ("novelty", "Novelty rejections and diversity"), ("lineage", "Lineage of the best candidates")):
        if key in figs:
            L.append(f"![{caption}]({figs[key]})\n")

    L.append("## The theory, checked on this run\n")
    L.append("| result | this run | paper |")
    L.append("|---|---|---|")
    if a.trend is not None:
        L.append(f"| Thm 2: monotone mean quality (Mann–Kendall) | S = {a.trend.s}, p(increasing) = {a.trend.p_increasing:.3f}, "
                 f"Sen slope {a.trend.sen_slope:+.4f}/cycle | consistent (monotone trend) |")
    else:
        L.append("| Thm 2: monotone mean quality | fewer than 3 cycles with trained candidates: no test | consistent |")
    if a.elite_check is not None:
        ec = a.elite_check
        held = int(ec.holds[1:].sum()) if len(ec.holds) > 1 else 0
        within = int(ec.holds_within_ci[1:].sum()) if len(ec.holds) > 1 else 0
        L.append(f"| Thm 3: C_t ≥ 1−(1−ρ_0)^t | ρ_0 = C_0 = {ec.rho0:.3f}; C_t = {', '.join(f'{x:.2f}' for x in ec.mass)}; "
                 f"bound held in {held}/{max(len(ec.mass) - 1, 0)} cycles ({within} within CI) | plateau (\"LoRA ceiling\"), direction only |")
    for mode, d in sorted(a.modes.items()):
        L.append(f"| valid rate, {mode} | {d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] of {d['generated']}, "
                 f"n̄ = {_f(d['mean_tokens'], 0)} tokens | {PAPER['r_' + mode]:.3f} |")
    m = a.markov
    if m.get("measured_ratio") is not None:
        pred = f"; Markov prediction {m['predicted_ratio']:.2f} (ε̂ = {m['eps_hat']:.2e})" if "predicted_ratio" in m else ""
        share = f"; {m['apply_share_of_delta_failures']:.0%} of delta failures are application failures" if "apply_share_of_delta_failures" in m else ""
        L.append(f"| Cor. 6: r_δ / r_full | {m['measured_ratio']:.2f}{pred}{share} | {PAPER['ratio']} measured; "
                 f"\"calibrated {PAPER['ratio_calibrated_claim']}\" cannot be a ratio of rates ({PAPER['ratio_calibrated_claim']} × {PAPER['r_full']} > 1) |")
    total_rej = sum(c.duplicates for c in a.cycles)
    total_acc = sum(c.accepted for c in a.cycles)
    L.append(f"| Result 5: novelty filter | {total_rej} near-duplicates rejected, {total_acc} novel programs admitted | persistent novel admissions |")
    L.append(f"| Result 6: proxy reliability | see `cenas proxy-snr` | Qwen ρ_S {PAPER['qwen_spearman']}; DeepSeek n.s. under low SNR |")
    L.append(f"| scale | {sum(c.generated for c in a.cycles)} generations, {len(a.cycles)} cycles | "
             f"{PAPER['architectures']} architectures, {PAPER['cycles']} cycles |")
    L.append("")

    if a.finetune_losses:
        L.append("## CE updates\n")
        L.append("| update | steps | first loss | last loss |")
        L.append("|---|---|---|---|")
        for t, ls in sorted(a.finetune_losses.items()):
            name = "warm start" if t == -1 else f"cycle {t}"
            if ls:
                L.append(f"| {name} | {len(ls)} | {_f(ls[0], 2)} | {_f(ls[-1], 2)} |")
        L.append("")

    L.append("## Best architectures\n")
    if not a.best:
        L.append("No candidate was trained successfully.\n")
    for i, b in enumerate(a.best, 1):
        chain = " ← ".join(lineage_chain(a, b["id"]))
        L.append(f"### {i}. `{b['id']}` — Q {_f(b['quality'])}, accuracy {_f(b['accuracy'])}, "
                 f"{b['params'] or 0:,} params, dataset {b['dataset']}, {b['mode']}\n")
        L.append(f"Lineage: {chain}\n")
        L.append("```python\n" + (b["source"] or "").rstrip() + "\n```\n")
    return "\n".join(L) + "\n"
