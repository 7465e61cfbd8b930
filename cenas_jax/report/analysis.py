"""The diagnostics of a run, computed from its store (DESIGN.md §6): the numbers the report shows.

Definitions (shared with the loop, see DESIGN.md §6 "Definitions"):
- a *generation* is one LLM sample (a resampled near-duplicate is a generation too);
- *valid* = passed the cheap stages (apply, syntax, policy, build, shape, budget);
  valid-generation rate = valid / generated, per mode;
- Q = the normalised proxy accuracy of a trained candidate;
- C_t = the share of cycle t's generations with Q ≥ γ* (γ* = γ_0, invalid ones outside).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import theory
from cenas_jax.search.rundir import PHASE_ORDER
from cenas_jax.store import RunStore

VALID_VERDICTS = ("valid", "accepted", "duplicate")

# The paper's own figures (arXiv 2605.30103 and the delta paper 2605.04903), put beside ours.
PAPER = {
    "r_delta": 0.713,
    "r_full": 0.506,
    "ratio": 1.41,
    "ratio_calibrated_claim": 2.23,
    "qwen_spearman": 0.635,
    "cycles": 22,
    "architectures": 3300,
    "proxy_spearman_1_vs_50_epochs": 0.926,
}


@dataclass
class CycleStats:
    cycle: int
    generated: int
    valid: int
    accepted: int
    duplicates: int
    trained: int
    qualities: list[float]
    gamma: float | None
    elites: list[str]
    mean_q: float | None = None
    q_low: float | None = None
    q_high: float | None = None
    quantiles: tuple[float, float, float] | None = None
    best_so_far: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    diversity: float | None = None
    distinct_structures: int = 0  # distinct forward-pass structure hashes among accepted programs
    seconds: float | None = None


@dataclass
class RunAnalysis:
    run_dir: Path
    config: dict[str, Any]
    cycles: list[CycleStats]
    modes: dict[str, dict[str, Any]]
    elite_check: Any | None
    trend: Any | None
    markov: dict[str, Any]
    best: list[dict[str, Any]]
    lineage: dict[str, dict[str, Any]]
    reference: dict[str, float]
    finetune_losses: dict[int, list[float]]


def analyse(run_dir: str | Path) -> RunAnalysis:
    """Read a run directory's store and compute every diagnostic of the report."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False) as store:
        run = store.get_run("main")
        if run is None:
            from cenas_jax.errors import UserError

            raise UserError(f"{run_dir}: the store holds no run named 'main'")
        rid = run["id"]
        rows = store.candidates(run_id=rid)
        cyc_data = {c["cycle"]: c for c in store.cycles(rid)}
        timings = store.timings(rid)
        proxy = {}
        for e in store.evaluations(run_id=rid, budget="proxy"):
            proxy[e["candidate_id"]] = e
        structure = {e["candidate_id"]: e["structure_hash"] for e in store.evaluations(run_id=rid, budget="check")
                     if e["structure_hash"]}
        structure.update({k: e["structure_hash"] for k, e in proxy.items() if e["structure_hash"]})
        losses = store.finetune_losses(rid)

    gen_rows = [r for r in rows if r["cycle"] is not None and r["cycle"] >= 0]
    by_cycle: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in gen_rows:
        by_cycle[r["cycle"]].append(r)

    cycles: list[CycleStats] = []
    best = -math.inf
    for t in sorted(by_cycle):
        rs = by_cycle[t]
        qs = [r["quality"] for r in rs if r["quality"] is not None]
        cd = cyc_data.get(t, {})
        st = CycleStats(
            cycle=t,
            generated=len(rs),
            valid=sum(r["verdict"] in VALID_VERDICTS for r in rs),
            accepted=sum(r["verdict"] == "accepted" for r in rs),
            duplicates=sum(r["verdict"] == "duplicate" for r in rs),
            trained=len(qs),
            qualities=qs,
            gamma=cd.get("gamma"),
            elites=list(cd.get("elites") or []),
            error_kinds=dict(Counter(r["error_kind"] for r in rs if r["error_kind"])),
            # The loop's phases ("sample" is a part of "generate", not added again).
            seconds=sum(v for k, v in timings.get(t, {}).items() if k in PHASE_ORDER) or None,
        )
        if qs:
            if len(qs) > 1:
                m = theory.mean_ci(qs)
                st.mean_q, st.q_low, st.q_high = m.mean, m.low, m.high
            else:
                st.mean_q = qs[0]
            st.quantiles = tuple(float(x) for x in np.quantile(qs, [0.25, 0.5, 0.75]))  # type: ignore[assignment]
            best = max(best, max(qs))
        st.best_so_far = best if best > -math.inf else None
        st.distinct_structures = len({structure[r["id"]] for r in rs if r["verdict"] == "accepted" and r["id"] in structure})
        accepted_src = [r["source"] for r in rs if r["verdict"] == "accepted"]
        if len(accepted_src) >= 2:
            from cenas_jax.search.novelty import mean_pairwise_jaccard

            st.diversity = float(mean_pairwise_jaccard(accepted_src))
        cycles.append(st)

    # Valid-generation rate per mode, Wilson CIs, mean completion tokens, delta-apply share.
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("full", "delta"):
        rs = [r for r in gen_rows if r["mode"] == mode]
        if not rs:
            continue
        k = sum(r["verdict"] in VALID_VERDICTS for r in rs)
        lo, hi = theory.wilson_interval(k, len(rs))
        toks = [r["token_count"] for r in rs if r["token_count"]]
        fails = [r for r in rs if r["verdict"] == "invalid"]
        modes[mode] = {
            "generated": len(rs), "valid": k, "rate": k / len(rs), "low": float(lo), "high": float(hi),
            "mean_tokens": float(np.mean(toks)) if toks else None,
            "apply_failures": sum(r["error_kind"] == "delta_apply" for r in fails),
            "failures": len(fails),
            "per_cycle": {t: _rate([r for r in rs if r["cycle"] == t]) for t in sorted(by_cycle)},
        }

    markov: dict[str, Any] = {}
    if "full" in modes and "delta" in modes:
        f, d = modes["full"], modes["delta"]
        markov["measured_ratio"] = d["rate"] / f["rate"] if f["rate"] > 0 else None
        if 0 < f["rate"] <= 1 and f["mean_tokens"] and d["mean_tokens"]:
            markov["eps_hat"] = float(theory.calibrate_token_error(f["rate"], f["mean_tokens"]))
            markov["predicted_delta_rate"] = float(theory.predict_delta_rate(f["rate"], f["mean_tokens"], d["mean_tokens"]))
            markov["predicted_ratio"] = float(theory.predict_delta_ratio(f["rate"], f["mean_tokens"], d["mean_tokens"]))
        if d["failures"]:
            markov["apply_share_of_delta_failures"] = d["apply_failures"] / d["failures"]

    elite_check = None
    if cycles and cycles[0].gamma is not None and all(c.generated > 0 for c in cycles):
        elite_check = theory.elite_bound_check([c.qualities for c in cycles], cycles[0].gamma,
                                               [c.generated for c in cycles])
    means = [c.mean_q if c.mean_q is not None else math.nan for c in cycles]
    trend = theory.monotonic_trend_test(means) if sum(not math.isnan(m) for m in means) >= 3 else None

    trained = [r for r in gen_rows if r["quality"] is not None]
    trained.sort(key=lambda r: (-r["quality"], (proxy.get(r["id"]) or {}).get("params") or 0, r["cycle"], r["idx"]))
    top = []
    for r in trained[:5]:
        e = proxy.get(r["id"], {})
        top.append({**r, "accuracy": e.get("accuracy"), "params": e.get("params"), "flops": e.get("flops")})
    lineage = {r["id"]: {"parent": r["parent_id"], "cycle": r["cycle"], "quality": r["quality"], "mode": r["mode"]}
               for r in rows}
    return RunAnalysis(run_dir=run_dir, config=run["config"], cycles=cycles, modes=modes, elite_check=elite_check,
                       trend=trend, markov=markov, best=top, lineage=lineage,
                       reference=cyc_data.get(-1, {}).get("reference", {}), finetune_losses=losses)


def _rate(rs: list[dict[str, Any]]) -> dict[str, float] | None:
    if not rs:
        return None
    k = sum(r["verdict"] in VALID_VERDICTS for r in rs)
    lo, hi = theory.wilson_interval(k, len(rs))
    return {"n": len(rs), "valid": k, "rate": k / len(rs), "low": float(lo), "high": float(hi)}


def lineage_chain(analysis: RunAnalysis, candidate_id: str) -> list[str]:
    """The ancestry of a candidate, itself first, following parent links (cycle-safe)."""
    chain, seen = [], set()
    cur: str | None = candidate_id
    while cur is not None and cur not in seen:
        chain.append(cur)
        seen.add(cur)
        cur = analysis.lineage.get(cur, {}).get("parent")
    return chain
