"""`cenas report RUN_DIR`: figures and a Markdown report, read from the run store."""

from __future__ import annotations

from pathlib import Path

from cenas_jax.report.analysis import BEATS_Z, PAPER, RunAnalysis, analyse, lineage_chain
from cenas_jax.report.figures import write_figures
from cenas_jax.report.fmt import num


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, analysis: RunAnalysis | None = None) -> Path:
    """Analyse the run (or take its ``analysis``), write PNGs and ``report.md`` into ``out_dir`` (default
    RUN_DIR/report); returns the .md path."""
    a = analysis if analysis is not None else analyse(run_dir)
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
             f"{a.cycles_completed} of {s.get('cycles')} cycles completed × {s.get('candidates_per_cycle')} candidates, mode "
             f"`{s.get('mode')}`, elite fraction ρ = {s.get('elite_rho')}, novelty τ = {s.get('novelty', {}).get('threshold')}.\n")
    L += _status_lines(a)
    if a.throughput is not None:
        tp = a.throughput
        L.append(f"Throughput: {tp.line()}. Per cycle: "
                 + ", ".join(f"{t}: {r:.2f}" for t, r in tp.per_cycle) + " per minute.\n")
    if a.reference:
        L.append("Quality Q = proxy accuracy / the median accuracy of the seed corpus on the same dataset "
                 "(reference: " + ", ".join(f"{k} {v:.3f}" for k, v in a.reference.items()) + "), so a typical corpus "
                 "program has Q = 1.\n")
    L += _verdict_lines(a)
    L += _corpus_lines(a)

    L.append("## Per cycle\n")
    cq = num(a.corpus_best_q)
    L.append("| cycle | generated | unchecked | valid | accepted | dup. rejected | trained | mean Q [95% CI] | median Q | "
             "best Q (cycle) | best so far | best corpus Q | beat corpus | degenerate | γ_t | elites | "
             "diversity (mean Jaccard) | distinct structures | s |")
    L.append("|" + "---|" * 19)
    for c in a.cycles:
        ci = f"{num(c.mean_q)} [{num(c.q_low)}, {num(c.q_high)}]" if c.mean_q is not None else "–"
        med = num(c.quantiles[1]) if c.quantiles else "–"
        name = f"{c.cycle}" + ("" if c.complete else " (incomplete)")
        L.append(f"| {name} | {c.generated} | {c.unchecked} | {c.valid} | {c.accepted} | {c.duplicates} | {c.trained} | {ci} | "
                 f"{med} | {num(c.best_q)} | {num(c.best_so_far)} | {cq} | {c.beats_corpus} | {c.degenerate} | {num(c.gamma)} | "
                 f"{len(c.elites)} | {num(c.diversity, '.2f')} | {c.distinct_structures} | {num(c.seconds, '.0f')} |")
    L.append("")
    L.append(f"*beat corpus*: trained candidates whose accuracy exceeds the best corpus program's on the same dataset "
             f"by more than {BEATS_Z:g} standard errors of the difference (the proxy's noise, below). *unchecked*: "
             "sampled but never checked (the run stopped first); not counted as invalid.\n")
    as_full = [(c.cycle, c.elites_as_full) for c in a.cycles if c.elites_as_full]
    if as_full:
        L.append(f"*elites trained as full programs*: {sum(n for _, n in as_full)} delta elite(s) whose edit from the "
                 "parent could not be written; the CE update trained each on the full-mode prompt showing its parent "
                 "(cycle " + ", ".join(f"{t}: {n}" for t, n in as_full) + ").\n")
    for key, caption in (("quality", "Quality per cycle"), ("elite_mass", "Elite mass against Theorem 3's bound"),
                         ("valid_rate", "Valid-generation rate per mode"), ("errors", "Error kinds per cycle"),
                         ("novelty", "Novelty rejections and diversity"), ("lineage", "Lineage of the best candidates")):
        if key in figs:
            L.append(f"![{caption}]({figs[key]})\n")

    L.append("## The theory, checked on this run\n")
    L.append("| result | this run | paper |")
    L.append("|---|---|---|")
    L += [f"| {r} | {ours} | {paper} |" for r, ours, paper in theory_rows(a)]
    L.append("")

    if a.finetune_losses:
        L.append("## CE updates\n")
        L.append("| update | steps | first loss | last loss |")
        L.append("|---|---|---|---|")
        for t, ls in sorted(a.finetune_losses.items()):
            name = "warm start" if t == -1 else f"cycle {t}"
            if ls:
                L.append(f"| {name} | {len(ls)} | {num(ls[0], '.2f')} | {num(ls[-1], '.2f')} |")
        L.append("")

    L.append("## Best architectures\n")
    if not a.best:
        L.append("No candidate was trained successfully.\n")
    for i, b in enumerate(a.best, 1):
        chain = " ← ".join(lineage_chain(a, b["id"]))
        L.append(f"### {i}. `{b['id']}` — Q {num(b['quality'])}, accuracy {num(b['accuracy'])}, "
                 f"{b['params'] or 0:,} params, dataset {b['dataset']}, {b['mode']}\n")
        L.append(_vs_corpus_line(a, b) + "\n")
        if b.get("degenerate"):
            L.append("**Warning — degenerate program:** " + "; ".join(b["degenerate"]) + ".\n")
        L.append(f"Lineage: {chain}\n")
        L.append("```python\n" + (b["source"] or "").rstrip() + "\n```\n")
    return "\n".join(L) + "\n"


def theory_rows(a: RunAnalysis) -> list[tuple[str, str, str]]:
    """The paper's results beside this run's numbers: (result, this run, paper), as the report and the live
    view show them."""
    rows: list[tuple[str, str, str]] = []
    if a.trend is not None:
        rows.append(("Thm 2: monotone mean quality (Mann–Kendall)",
                     f"S = {a.trend.s}, p(increasing) = {a.trend.p_increasing:.3f}, Sen slope {a.trend.sen_slope:+.4f}/cycle",
                     "consistent (monotone trend)"))
    else:
        rows.append(("Thm 2: monotone mean quality", "fewer than 3 cycles with trained candidates: no test", "consistent"))
    if a.elite_check is not None:
        ec = a.elite_check
        held = int(ec.holds[1:].sum()) if len(ec.holds) > 1 else 0
        within = int(ec.holds_within_ci[1:].sum()) if len(ec.holds) > 1 else 0
        rows.append(("Thm 3: C_t ≥ 1−(1−ρ_0)^t",
                     f"ρ_0 = C_0 = {ec.rho0:.3f}; C_t = {', '.join(f'{x:.2f}' for x in ec.mass)}; "
                     f"bound held in {held}/{max(len(ec.mass) - 1, 0)} cycles ({within} within CI)",
                     "plateau (\"LoRA ceiling\"), direction only"))
    for mode, d in sorted(a.modes.items()):
        unchecked = f" ({d['unchecked']} unchecked left out)" if d.get("unchecked") else ""
        rows.append((f"valid rate, {mode}",
                     f"{d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] of {d['generated']} checked{unchecked}, "
                     f"n̄ = {num(d['mean_tokens'], '.0f')} tokens", f"{PAPER['r_' + mode]:.3f}"))
    m = a.markov
    if m.get("measured_ratio") is not None:
        pred = f"; Markov prediction {m['predicted_ratio']:.2f} (ε̂ = {m['eps_hat']:.2e})" if "predicted_ratio" in m else ""
        share = (f"; {m['apply_share_of_delta_failures']:.0%} of delta failures are application failures"
                 if "apply_share_of_delta_failures" in m else "")
        rows.append(("Cor. 6: r_δ / r_full", f"{m['measured_ratio']:.2f}{pred}{share}",
                     f"{PAPER['ratio']} measured; \"calibrated {PAPER['ratio_calibrated_claim']}\" cannot be a ratio of "
                     f"rates ({PAPER['ratio_calibrated_claim']} × {PAPER['r_full']} > 1)"))
    total_rej = sum(c.duplicates for c in a.cycles)
    total_acc = sum(c.accepted for c in a.cycles)
    rows.append(("Result 5: novelty filter", f"{total_rej} near-duplicates rejected, {total_acc} novel programs admitted",
                 "persistent novel admissions"))
    rows.append(("Result 6: proxy reliability", "see `cenas proxy-snr`",
                 f"Qwen ρ_S {PAPER['qwen_spearman']}; DeepSeek n.s. under low SNR"))
    rows.append(("scale", f"{sum(c.generated for c in a.cycles)} generations, {len(a.cycles)} cycles",
                 f"{PAPER['architectures']} architectures, {PAPER['cycles']} cycles"))
    return rows


def _status_lines(a: RunAnalysis) -> list[str]:
    """Say plainly when the run did not finish, where it stopped, and what was left unchecked."""
    unchecked = sum(c.unchecked for c in a.cycles)
    if a.status == "finished":
        return [f"{unchecked} generations were never checked.\n"] if unchecked else []
    where = f" at cycle {a.position[0]}, phase `{a.position[1]}`" if a.position else ""
    how = {"interrupted": "was interrupted", "failed": "failed", "running": "is still running, or was killed"}.get(
        a.status, f"is {a.status}")
    out = [f"**This run {how}{where}: the figures below cover {a.cycles_completed} completed "
           f"cycle{'s' if a.cycles_completed != 1 else ''}"
           + (" and one incomplete one" if any(not c.complete for c in a.cycles) else "")
           + f".** Continue it with `cenas resume {a.run_dir}`.\n"]
    if unchecked:
        out.append(f"{unchecked} generation{'s were' if unchecked != 1 else ' was'} sampled but never checked; "
                   "they are counted apart, not as invalid, and left out of the valid rates.\n")
    return out


def _verdict_lines(a: RunAnalysis) -> list[str]:
    """The one-line answer a reader wants first: did the search find anything better than the corpus?"""
    trained = sum(c.trained for c in a.cycles)
    if not a.corpus_best or not trained:
        return []
    beats = sum(c.beats_corpus for c in a.cycles)
    degenerate = sum(c.degenerate for c in a.cycles)
    line = (f"**Against the baseline:** {beats} of {trained} trained candidates beat the best corpus program of their "
            f"dataset by more than the proxy's noise ({BEATS_Z:g} standard errors)")
    unknown = [ds for ds, n in a.noise.items() if ds in a.corpus_best and n.se(0.5) is None]
    if unknown:
        line += f"; the noise is unknown on {', '.join(unknown)}, so no candidate there can be said to"
    line += "."
    if degenerate:
        line += f" {degenerate} trained candidate{'s are' if degenerate != 1 else ' is'} flagged degenerate (see below)."
    return [line + "\n"]


def _corpus_lines(a: RunAnalysis) -> list[str]:
    if not a.corpus:
        return []
    L = ["## Seed corpus (the baseline)\n",
         "The corpus programs as trained in the reference phase, with the same recipe as every candidate.\n",
         "| program | dataset | accuracy | Q | params | flags |", "|---|---|---|---|---|---|"]
    for c in a.corpus:
        flags = ", ".join(f.split(":", 1)[0] for f in c.get("degenerate") or []) or ("failed: " + c["error_kind"] if c.get("error_kind") else "")
        L.append(f"| {c['name']} | {c['dataset']} | {num(c['accuracy'])} | {num(c['quality'])} | "
                 f"{(c['params'] or 0):,} | {flags} |")
    L.append("")
    for ds, b in sorted(a.corpus_best.items()):
        nz = a.noise.get(ds)
        se = nz.se(b["accuracy"], len(b.get("seed_accuracies") or []) or 1) if nz else None
        L.append(f"Best corpus program on {ds}: `{b['name']}`, accuracy {num(b['accuracy'])}, Q {num(b['quality'])}; "
                 f"proxy noise: {nz.describe() if nz else 'unknown'}"
                 + (f" (standard error of its accuracy {se:.4f})" if se is not None else "") + ".\n")
    return L


def _vs_corpus_line(a: RunAnalysis, b: dict) -> str:
    v = b.get("vs_corpus")
    if not v:
        return "No corpus baseline on this dataset."
    n_val = a.noise[b["dataset"]].n_val if b["dataset"] in a.noise else None
    images = f" ({v['delta'] * n_val:+.0f} of {n_val} validation images)" if n_val else ""
    head = f"Against the best corpus program `{v['best']}`: accuracy {v['delta']:+.4f}{images}"
    if v["beats"] is None:
        return head + "; the proxy's noise is unknown here, so whether it beats the corpus cannot be said."
    verdict = ("**beats it** beyond the proxy's noise" if v["beats"]
               else "does **not** beat it beyond the proxy's noise")
    return head + f", {v['z']:+.1f} standard errors (σ {v['se']:.4f}): {verdict}."
