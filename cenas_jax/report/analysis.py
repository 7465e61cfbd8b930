"""The diagnostics of a run, computed from its store (DESIGN.md §6): the numbers the report shows.

Definitions (shared with the loop, see DESIGN.md §6 "Definitions"):
- a *generation* is one LLM sample (a resampled near-duplicate is a generation too);
- *valid* = passed the cheap stages (apply, syntax, policy, build, shape, budget);
  valid-generation rate = valid / generated, per mode;
- Q = the normalised proxy accuracy of a trained candidate;
- C_t = the share of cycle t's generations with Q ≥ γ* (γ* = γ_0, invalid ones outside);
- an *unchecked* generation was sampled but its cheap checks never ran (the run stopped first):
  it is counted apart, and neither valid nor invalid;
- the *baseline* is the seed corpus trained in the reference phase: a candidate *beats the
  corpus* when its accuracy exceeds the best corpus program's on the same dataset by more than
  ``BEATS_Z`` standard errors of the difference (``ProxyNoise``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import theory
from cenas_jax.config import DataConfig, from_dict
from cenas_jax.data import load_dataset
from cenas_jax.errors import UserError
from cenas_jax.programs import mean_pairwise_jaccard
from cenas_jax.rundir import PHASE_ORDER, REFERENCE_CYCLE, RunDir
from cenas_jax.store import PROXY, VALID_VERDICTS, RunStore, Verdict

BEATS_Z = 2.0  # standard errors of the accuracy difference a candidate must clear to beat the corpus

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
    unchecked: int = 0  # sampled, cheap checks never run (the run stopped): neither valid nor invalid
    complete: bool = True  # every phase of the cycle ran
    beats_corpus: int = 0  # trained candidates that beat the best corpus program beyond the proxy's noise
    degenerate: int = 0  # trained candidates flagged degenerate
    elites_as_full: int = 0  # delta elites whose edit could not be written: the CE update trained their program

    @property
    def checked(self) -> int:
        return self.generated - self.unchecked

    @property
    def best_q(self) -> float | None:
        return max(self.qualities) if self.qualities else None


@dataclass(frozen=True)
class ProxyNoise:
    """The noise of one proxy accuracy on a dataset: seed spread and/or the validation split's sampling.

    ``seed_sd``: pooled within-program standard deviation over seeds (programs trained with ≥ 2
    seeds; None without any); ``n_val``: validation images (None when the dataset cannot be read
    here), giving the binomial standard error sqrt(p(1-p)/n_val). Both add up when both are known.
    """

    dataset: str
    seed_sd: float | None
    seed_programs: int
    n_val: int | None

    def se(self, accuracy: float, n_seeds: int = 1) -> float | None:
        """Standard error of one program's mean accuracy over ``n_seeds`` seeds; None when unknown."""
        parts = []
        if self.seed_sd is not None:
            parts.append(self.seed_sd ** 2 / max(n_seeds, 1))
        if self.n_val:
            parts.append(accuracy * (1 - accuracy) / self.n_val)
        return math.sqrt(sum(parts)) if parts else None

    def describe(self) -> str:
        bits = []
        if self.seed_sd is not None:
            bits.append(f"seed σ {self.seed_sd:.4f} (pooled over {self.seed_programs} programs)")
        if self.n_val:
            bits.append(f"binomial over {self.n_val} validation images")
        return " + ".join(bits) if bits else "unknown (one seed per program and the dataset is not readable here)"


@dataclass(frozen=True)
class Throughput:
    """How fast a run found valid-and-novel candidates (verdict ``accepted``: passed every check and the
    novelty filter), per minute of wall time, from the phase times the loop records."""

    novel: int
    cycle_seconds: float  # the cycles' phases (generate, train, select, update)
    reference_seconds: float | None  # the reference phase before cycle 0 (corpus training and warm start)
    per_cycle: tuple[tuple[int, float], ...]  # (cycle, valid-and-novel per minute)

    @property
    def per_minute(self) -> float:
        """Over the search cycles."""
        return 60.0 * self.novel / self.cycle_seconds

    @property
    def per_minute_end_to_end(self) -> float | None:
        """Over the cycles and the reference phase (warm start included); None when that was not recorded."""
        if self.reference_seconds is None:
            return None
        return 60.0 * self.novel / (self.cycle_seconds + self.reference_seconds)

    def line(self) -> str:
        """One line for a terminal or a report."""
        text = (f"{self.novel} valid-and-novel candidates in {self.cycle_seconds / 60:.1f} min of search cycles: "
                f"{self.per_minute:.2f} per minute")
        if self.reference_seconds is not None:
            text += (f"; {self.per_minute_end_to_end:.2f} per minute end to end (with the reference phase and warm "
                     f"start, {self.reference_seconds / 60:.1f} min)")
        return text


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
    corpus: list[dict[str, Any]] = field(default_factory=list)  # the baseline: name, dataset, accuracy, quality, ...
    corpus_best: dict[str, dict[str, Any]] = field(default_factory=dict)  # per dataset: the best corpus program
    noise: dict[str, ProxyNoise] = field(default_factory=dict)
    status: str = "finished"  # finished | interrupted | failed | running (the run's, from state.json)
    position: tuple[int, str] | None = None  # (cycle, phase) the run would continue at; None when finished
    cycles_planned: int | None = None
    reference_seconds: float | None = None  # the reference phase (corpus training, warm start); None: not recorded

    @property
    def cycles_completed(self) -> int:
        return sum(c.complete for c in self.cycles)

    @property
    def throughput(self) -> Throughput | None:
        """Valid-and-novel candidates per minute of wall time (None before a cycle has a recorded time)."""
        timed = [c for c in self.cycles if c.seconds]
        if not timed:
            return None
        return Throughput(novel=sum(c.accepted for c in self.cycles), cycle_seconds=sum(c.seconds for c in timed),
                          reference_seconds=self.reference_seconds,
                          per_cycle=tuple((c.cycle, 60.0 * c.accepted / c.seconds) for c in timed))

    @property
    def corpus_best_q(self) -> float | None:
        qs = [b["quality"] for b in self.corpus_best.values() if b.get("quality") is not None]
        return max(qs) if qs else None


def analyse(run_dir: str | Path, migrate: bool = True) -> RunAnalysis:
    """Read a run directory's store and compute every diagnostic of the report (``migrate=False``: never
    upgrade an older store, see ``RunStore``)."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False, migrate=migrate) as store:
        run = store.get_run("main")
        if run is None:
            raise UserError(f"{run_dir}: the store holds no run named 'main'")
        rid = run["id"]
        rows = store.candidates(run_id=rid)
        cyc_data = {c["cycle"]: c for c in store.cycles(rid)}
        timings = store.timings(rid)
        # The latest proxy evaluation of each candidate, failed ones included (their error kinds and flags).
        proxy = {cid: e.to_dict() for cid, e in store.latest_evaluations(rid, PROXY, ok=False).items()}
        reference = dict(store.reference_accuracies(rid))
        structure = {e["candidate_id"]: e["structure_hash"] for e in store.evaluations(run_id=rid, budget="check")
                     if e["structure_hash"]}
        structure.update({k: e["structure_hash"] for k, e in proxy.items() if e["structure_hash"]})
        degenerate: dict[str, list[str]] = {}
        for e in store.evaluations(run_id=rid, budget="check") + list(proxy.values()):
            if e.get("degenerate") is not None:
                degenerate[e["candidate_id"]] = e["degenerate"]
        losses = store.finetune_losses(rid)
        store_status = run.get("status")
    status, position = _run_status(run_dir, store_status)
    corpus = _corpus_baseline(rows, proxy, reference, degenerate)
    corpus_best: dict[str, dict[str, Any]] = {}
    for c in corpus:
        if c["accuracy"] is not None and (c["dataset"] not in corpus_best or c["accuracy"] > corpus_best[c["dataset"]]["accuracy"]):
            corpus_best[c["dataset"]] = c
    cand_ds = {r["id"]: r["dataset"] for r in rows}
    evals = [{**e, "dataset": cand_ds.get(e["candidate_id"]) or e.get("dataset")} for e in proxy.values()]
    noise = {ds: _noise(ds, evals, run["config"]) for ds in sorted({r["dataset"] for r in rows if r["dataset"]})}

    gen_rows = [r for r in rows if r["cycle"] is not None and r["cycle"] >= 0]
    by_cycle: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in gen_rows:
        by_cycle[r["cycle"]].append(r)

    verdicts = {r["id"]: beats_corpus(r, proxy.get(r["id"]), corpus_best, noise) for r in gen_rows
                if r["quality"] is not None}
    cycles: list[CycleStats] = []
    best = -math.inf
    for t in sorted(by_cycle):
        rs = by_cycle[t]
        qs = [r["quality"] for r in rs if r["quality"] is not None]
        cd = cyc_data.get(t, {})
        st = CycleStats(
            cycle=t,
            generated=len(rs),
            unchecked=sum(r["verdict"] is None for r in rs),
            complete=position is None or t < position[0],
            beats_corpus=sum((verdicts.get(r["id"]) or {}).get("beats") is True for r in rs),
            degenerate=sum(bool(degenerate.get(r["id"])) for r in rs if r["quality"] is not None),
            valid=sum(r["verdict"] in VALID_VERDICTS for r in rs),
            accepted=sum(r["verdict"] == Verdict.ACCEPTED for r in rs),
            duplicates=sum(r["verdict"] == Verdict.DUPLICATE for r in rs),
            trained=len(qs),
            qualities=qs,
            gamma=cd.get("gamma"),
            elites=list(cd.get("elites") or []),
            elites_as_full=len((cd.get("update") or {}).get("elites_as_full") or ()),
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
        st.distinct_structures = len({structure[r["id"]] for r in rs if r["verdict"] == Verdict.ACCEPTED and r["id"] in structure})
        accepted_src = [r["source"] for r in rs if r["verdict"] == Verdict.ACCEPTED]
        if len(accepted_src) >= 2:
            st.diversity = float(mean_pairwise_jaccard(accepted_src))
        cycles.append(st)

    # Valid-generation rate per mode, Wilson CIs, mean completion tokens, delta-apply share.
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("full", "delta"):
        unchecked = sum(1 for r in gen_rows if r["mode"] == mode and r["verdict"] is None)
        rs = [r for r in gen_rows if r["mode"] == mode and r["verdict"] is not None]
        if not rs:
            continue
        k = sum(r["verdict"] in VALID_VERDICTS for r in rs)
        lo, hi = theory.wilson_interval(k, len(rs))
        toks = [r["token_count"] for r in rs if r["token_count"]]
        fails = [r for r in rs if r["verdict"] == Verdict.INVALID]
        modes[mode] = {
            "generated": len(rs), "valid": k, "rate": k / len(rs), "low": float(lo), "high": float(hi),
            "mean_tokens": float(np.mean(toks)) if toks else None,
            "apply_failures": sum(r["error_kind"] == "delta_apply" for r in fails),
            "failures": len(fails),
            "unchecked": unchecked,
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
    done = [c for c in cycles if c.complete]
    if done and done[0].gamma is not None and all(c.checked > 0 for c in done):
        elite_check = theory.elite_bound_check([c.qualities for c in done], done[0].gamma, [c.checked for c in done])
    means = [c.mean_q if c.mean_q is not None else math.nan for c in done]
    trend = theory.monotonic_trend_test(means) if sum(not math.isnan(m) for m in means) >= 3 else None

    trained = [r for r in gen_rows if r["quality"] is not None]
    trained.sort(key=lambda r: (-r["quality"], (proxy.get(r["id"]) or {}).get("params") or 0, r["cycle"], r["idx"]))
    top = []
    for r in trained[:5]:
        e = proxy.get(r["id"], {})
        top.append({**r, "accuracy": e.get("accuracy"), "params": e.get("params"), "flops": e.get("flops"),
                    "seed_accuracies": e.get("seed_accuracies") or [], "degenerate": degenerate.get(r["id"]),
                    "vs_corpus": verdicts.get(r["id"])})
    corpus_q = {c["id"]: c["quality"] for c in corpus}
    lineage = {r["id"]: {"parent": r["parent_id"], "cycle": r["cycle"], "mode": r["mode"],
                         "quality": r["quality"] if r["quality"] is not None else corpus_q.get(r["id"])}
               for r in rows}
    return RunAnalysis(run_dir=run_dir, config=run["config"], cycles=cycles, modes=modes, elite_check=elite_check,
                       trend=trend, markov=markov, best=top, lineage=lineage, reference=reference,
                       finetune_losses=losses, corpus=corpus, corpus_best=corpus_best, noise=noise, status=status,
                       position=position, cycles_planned=(run["config"].get("search") or {}).get("cycles"),
                       reference_seconds=timings.get(REFERENCE_CYCLE, {}).get("reference"))


def _run_status(run_dir: Path, store_status: str | None) -> tuple[str, tuple[int, str] | None]:
    """The run's status and the (cycle, phase) it would continue at (None when finished), from state.json."""
    try:
        st = RunDir(run_dir).load_state()
    except UserError:
        return (store_status or "unknown"), None
    if st.status == "finished" or st.phase == "done":
        return "finished", None
    return st.status, (st.cycle, st.phase)


def corpus_name(candidate_id: str, dataset: str | None) -> str:
    """``mlp_small`` from the corpus row id ``L-digits-mlp_small``."""
    prefix = f"L-{dataset}-"
    return candidate_id[len(prefix):] if dataset and candidate_id.startswith(prefix) else candidate_id


def _corpus_baseline(rows, proxy, reference, degenerate) -> list[dict[str, Any]]:
    """The seed corpus as trained in the reference phase: accuracy and Q (stored, or acc / the dataset's reference)."""
    out = []
    for r in rows:
        if r["cycle"] != -1:
            continue
        e = proxy.get(r["id"]) or {}
        acc = e.get("accuracy") if e.get("status") == "ok" else None
        q = r["quality"]
        if q is None and acc is not None and reference.get(r["dataset"]):
            q = acc / reference[r["dataset"]]
        out.append({"id": r["id"], "name": corpus_name(r["id"], r["dataset"]), "dataset": r["dataset"],
                    "accuracy": acc, "quality": q, "seed_accuracies": e.get("seed_accuracies") or [],
                    "params": e.get("params"), "error_kind": e.get("error_kind") if acc is None else None,
                    "degenerate": degenerate.get(r["id"])})
    out.sort(key=lambda c: (c["dataset"] or "", -(c["accuracy"] if c["accuracy"] is not None else -1.0), c["name"]))
    return out


def _noise(dataset: str, evaluations: list[dict[str, Any]], config: dict[str, Any]) -> ProxyNoise:
    """Pooled seed spread of the dataset's programs trained with ≥ 2 seeds, and its validation split's size."""
    variances, dof = 0.0, 0
    n_prog = 0
    for e in evaluations:
        seeds = [x for x in e.get("seed_accuracies") or [] if x is not None]
        if e.get("dataset") == dataset and e.get("status") == "ok" and len(seeds) >= 2:
            variances += float(np.var(seeds, ddof=1)) * (len(seeds) - 1)
            dof += len(seeds) - 1
            n_prog += 1
    return ProxyNoise(dataset=dataset, seed_sd=math.sqrt(variances / dof) if dof else None, seed_programs=n_prog,
                      n_val=_validation_size(dataset, config))


def _validation_size(dataset: str, config: dict[str, Any]) -> int | None:
    """Images in the run's validation split of ``dataset`` (None when it cannot be read here)."""
    try:
        cfg = from_dict(DataConfig, {**(config.get("data") or {}), "name": dataset})
        return int(len(load_dataset(cfg).y_val))
    except Exception:  # not readable on this machine (on-disk data elsewhere, bad config): the noise says so
        return None


def beats_corpus(row: dict[str, Any], evaluation: dict[str, Any] | None, corpus_best: dict[str, dict[str, Any]],
                 noise: dict[str, ProxyNoise]) -> dict[str, Any] | None:
    """Whether a trained candidate beats the best corpus program of its dataset by more than the proxy's noise.

    Returns ``{"beats": True | False | None (noise unknown), "delta": accuracy difference, "z": delta / se,
    "best": the corpus program's name, "se": the difference's standard error}``, or None without a baseline.
    """
    e = evaluation or {}
    base = corpus_best.get(row["dataset"])
    if base is None or e.get("accuracy") is None:
        return None
    acc, b = float(e["accuracy"]), float(base["accuracy"])
    nz = noise.get(row["dataset"])
    se_a = nz.se(acc, len(e.get("seed_accuracies") or []) or 1) if nz else None
    se_b = nz.se(b, len(base.get("seed_accuracies") or []) or 1) if nz else None
    delta = acc - b
    if se_a is None or se_b is None:
        return {"beats": None, "delta": delta, "z": None, "se": None, "best": base["name"]}
    se = math.sqrt(se_a ** 2 + se_b ** 2)
    z = delta / se if se > 0 else (math.inf if delta > 0 else 0.0)
    return {"beats": bool(z > BEATS_Z), "delta": delta, "z": z, "se": se, "best": base["name"]}


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
