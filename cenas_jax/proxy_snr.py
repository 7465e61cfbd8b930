"""Proxy reliability (result 6): measure σ²_arch, σ²_noise and ρ_S, and set them beside the closed form.

The model (DESIGN.md §6): the proxy score of architecture i in run j is
P_ij = Q_i + e_ij, Q ~ N(μ, σ²_arch), e ~ N(0, σ²_noise), SNR = σ²_arch/σ²_noise.
Result 6 predicts ρ_S(proxy, truth) = (6/π)·arcsin(sqrt(SNR/(1+SNR))/2) and
ρ_S(run, rerun) = (6/π)·arcsin(SNR/(1+SNR)/2). This module

- trains K architectures × S seeds at the proxy budget and × T seeds at a long
  budget whose seed mean is taken as ground truth (:func:`run_proxy_snr`),
- estimates the SNR by one-way ANOVA and measures the rank correlations
  (:func:`analyze`: pure numpy, every number from ``cenas_jax.theory``),
- computes the "ceiling effect" of a search run: the same quantities cycle by
  cycle, as the search concentrates and σ²_arch falls (:func:`ceiling_effect`),
- draws ρ_S against the SNR with the closed-form curves and the measured points
  (:func:`plot_rho_vs_snr`, :func:`plot_ceiling`).

Training goes through a ``ScoreFn`` seam; the default (:func:`evaluator_score_fn`)
is the sandbox ``Evaluator``, so no candidate code runs in this process. The
proxy is keyed by ``RunConfig.seed`` and the ground truth by ``seed + 1``
(``TRUTH_SEED_OFFSET``): the truth runs never share an initialisation with a
proxy run, which would correlate their noise and flatter the proxy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import theory
from cenas_jax.config import DataConfig, RunConfig, SandboxConfig, TrainConfig, to_dict
from cenas_jax.errors import UserError
from cenas_jax.report import fmt
from cenas_jax.report.plotting import pyplot

TRUTH_SEED_OFFSET = 1
RESULT_JSON = "proxy_snr.json"
RESULT_PNG = "proxy_snr.png"
CEILING_JSON = "ceiling.json"
CEILING_PNG = "ceiling.png"
# Spearman needs three pairs; fewer architectures in a (cycle, dataset) group give no row.
MIN_ARCHITECTURES = 3


# ---------------------------------------------------------------------------
# Training seam
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arch:
    """One architecture to score: an id, its source, its dataset (None: the config's) and cycle (runs only)."""

    id: str
    source: str
    dataset: str | None = None
    cycle: int | None = None


@dataclasses.dataclass(frozen=True)
class ArchScores:
    """Per-seed accuracies in [0, 1] of one architecture at one budget; ``error`` set (and no seeds) on failure."""

    seed_accuracies: tuple[float, ...] = ()
    error: str | None = None


# (architectures, training recipe, key seed) -> one ArchScores per architecture, in order.
ScoreFn = Callable[[Sequence[Arch], TrainConfig, int], list[ArchScores]]


def evaluator_score_fn(data_cfg: DataConfig, sandbox_cfg: SandboxConfig, progress: bool = False) -> ScoreFn:
    """The default ScoreFn: train through a sandbox ``Evaluator`` pool (one pool per call)."""

    def score(archs: Sequence[Arch], train_cfg: TrainConfig, seed: int) -> list[ArchScores]:
        from cenas_jax.candidates.evaluator import Evaluator
        from cenas_jax.candidates.records import Candidate

        cands = [Candidate(a.id, a.source, a.dataset) for a in archs]
        with Evaluator(data_cfg, train_cfg, sandbox_cfg, seed=seed) as ev:
            records = ev.evaluate(cands, train=True, progress=progress)
        by_id = {r.candidate_id: r for r in records}
        out = []
        for a in archs:
            r = by_id.get(a.id)
            if r is None:
                out.append(ArchScores(error="no record came back from the sandbox"))
            elif r.status != "ok":
                out.append(ArchScores(error=f"{r.error_kind}: {r.error_message or ''}".strip()))
            elif len(r.seed_accuracies) != train_cfg.seeds:
                out.append(ArchScores(error=f"expected {train_cfg.seeds} seed accuracies, got {len(r.seed_accuracies)}"))
            else:
                out.append(ArchScores(seed_accuracies=tuple(float(x) for x in r.seed_accuracies)))
        return out

    return score


def _matrix(scores: Sequence[ArchScores], n_seeds: int) -> np.ndarray:
    """(K, n_seeds) float matrix; a failed architecture's row is NaN."""
    m = np.full((len(scores), n_seeds), np.nan)
    for i, s in enumerate(scores):
        if s.error is None and len(s.seed_accuracies) == n_seeds:
            m[i] = s.seed_accuracies
    return m


# ---------------------------------------------------------------------------
# Analysis (pure numpy; no training)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One rank correlation: result 6's prediction beside the measurement.

    ``predicted``: ρ_S at the estimated SNR, assuming a noise-free reference;
    ``predicted_ci``: the SNR's bootstrap CI mapped through the (monotone)
    closed form; ``predicted_noisy_truth``: the prediction when the long-budget
    reference is itself a T-seed mean with its own SNR (needs T ≥ 2), i.e. with
    Pearson pearson(SNR)·pearson(SNR_T); ``expected_at_k``: Moran's expectation
    of a sample Spearman over the K architectures measured; ``measured``: the
    sample Spearman with its bootstrap CI (None with ``measured_error`` when
    undefined, e.g. a constant side).

    The model assumes the long budget measures the same Q as the proxy. For
    proxy-vs-truth comparisons ``implied_q_correlation`` = measured Pearson /
    the Pearson the noise alone allows (the classical correction for
    attenuation): ≈ 1 when the model holds, below 1 when the long budget
    re-ranks architectures (e.g. slow starters), which the SNR cannot see.
    """

    name: str  # "truth_single" | "truth_mean" | "retest"
    description: str
    snr_used: float  # the effective SNR the prediction uses (S·SNR for an S-seed mean)
    predicted: float
    predicted_ci: tuple[float, float] | None
    predicted_noisy_truth: float | None
    expected_at_k: float | None
    measured: theory.CorrelationResult | None
    measured_error: str | None = None
    measured_pearson: float | None = None  # truth comparisons only
    implied_q_correlation: float | None = None  # truth comparisons only, see above


@dataclasses.dataclass(frozen=True)
class ProxySNRAnalysis:
    """ANOVA and correlations of one score matrix: K architectures × S proxy seeds (× T truth seeds)."""

    ids: tuple[str, ...]
    proxy: np.ndarray  # (K, S) proxy accuracies
    truth: np.ndarray | None  # (K, T) long-budget accuracies, or None (retest only)
    snr: theory.SNREstimate
    truth_snr: theory.SNREstimate | None  # ANOVA of the truth runs (T >= 2)
    comparisons: tuple[Comparison, ...]
    n_boot: int
    ci: float
    seed: int

    def comparison(self, name: str) -> Comparison:
        for c in self.comparisons:
            if c.name == name:
                return c
        raise KeyError(name)


def _predict(snr: float, kind: str, n_seeds: int = 1) -> float:
    """Result 6's ρ_S, NaN where the SNR is undefined (no variation at all)."""
    if snr is None or math.isnan(snr):
        return math.nan
    return float(theory.predicted_spearman_from_snr(snr, kind=kind, n_seeds=n_seeds))


def _predict_ci(snr_ci: tuple[float, float] | None, kind: str, n_seeds: int = 1) -> tuple[float, float] | None:
    # The closed form is increasing in the SNR, so the SNR's interval maps end to end.
    if snr_ci is None or any(math.isnan(v) for v in snr_ci):
        return None
    return (_predict(snr_ci[0], kind, n_seeds), _predict(snr_ci[1], kind, n_seeds))


def _measure(x: np.ndarray, y: np.ndarray, n_boot: int, ci: float, seed: int):
    try:
        return theory.spearman(x, y, n_boot=n_boot, ci=ci, seed=seed), None
    except ValueError as e:
        return None, str(e)


def analyze(
    ids: Sequence[str],
    proxy,
    truth=None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ProxySNRAnalysis:
    """σ²_arch, σ²_noise, SNR and predicted vs measured ρ_S from score matrices.

    ``proxy``: (K, S ≥ 2) proxy accuracies; ``truth``: (K, T) long-budget
    accuracies or None. Rows with a NaN on either side are an error here (the
    caller drops failed architectures first), so that every number is computed
    on the same K architectures. Comparisons: "retest" (proxy seed 0 vs seed 1,
    kind="retest"), and with ``truth``: "truth_single" (proxy seed 0 vs the
    truth mean) and "truth_mean" (the S-seed proxy mean vs the truth mean,
    predicted at S·SNR). Bootstraps all use ``seed``.
    """
    p = np.asarray(proxy, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proxy: expected a (K, S >= 2) matrix, got shape {p.shape}")
    if len(ids) != p.shape[0]:
        raise ValueError(f"ids: expected {p.shape[0]} ids (one per row of proxy), got {len(ids)}")
    if np.any(~np.isfinite(p)):
        raise ValueError("proxy: contains NaN/inf; drop failed architectures first")
    t = None
    if truth is not None:
        t = np.asarray(truth, dtype=np.float64)
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2 or t.shape[0] != p.shape[0] or t.shape[1] < 1:
            raise ValueError(f"truth: expected a ({p.shape[0]}, T >= 1) matrix, got shape {t.shape}")
        if np.any(~np.isfinite(t)):
            raise ValueError("truth: contains NaN/inf; drop failed architectures first")
    K, S = p.shape
    est = theory.estimate_snr(p, n_boot=n_boot, ci=ci, seed=seed)
    truth_est = None
    if t is not None and t.shape[1] >= 2:
        truth_est = theory.estimate_snr(t, n_boot=n_boot, ci=ci, seed=seed)

    def comparison(name, description, x, y, kind, n_seeds):
        measured, err = _measure(x, y, n_boot, ci, seed)
        noisy = r_pearson = implied = None
        if kind == "truth" and truth_est is not None and not math.isnan(est.snr) and not math.isnan(truth_est.snr):
            rho_p = theory.pearson_from_snr(est.snr, "truth", n_seeds) * theory.pearson_from_snr(
                truth_est.snr, "truth", truth_est.S
            )
            noisy = float(theory.spearman_from_pearson(rho_p))
        if kind == "truth" and np.std(x) > 0 and np.std(y) > 0:
            r_pearson = float(np.corrcoef(x, y)[0, 1])
            allowed = math.nan if math.isnan(est.snr) else theory.pearson_from_snr(est.snr, "truth", n_seeds)
            if truth_est is not None and not math.isnan(truth_est.snr):
                allowed *= theory.pearson_from_snr(truth_est.snr, "truth", truth_est.S)
            implied = r_pearson / allowed if allowed > 0 else math.nan
        expected = None
        if not math.isnan(est.snr):
            expected = float(theory.expected_sample_spearman(theory.pearson_from_snr(est.snr, kind, n_seeds), K))
        return Comparison(
            name=name,
            description=description,
            snr_used=est.snr * n_seeds,
            predicted=_predict(est.snr, kind, n_seeds),
            predicted_ci=_predict_ci(est.snr_ci, kind, n_seeds),
            predicted_noisy_truth=noisy,
            expected_at_k=expected,
            measured=measured,
            measured_error=err,
            measured_pearson=r_pearson,
            implied_q_correlation=implied,
        )

    comps = [comparison("retest", "proxy seed 0 vs proxy seed 1", p[:, 0], p[:, 1], "retest", 1)]
    if t is not None:
        truth_mean = t.mean(axis=1)
        comps.append(comparison("truth_single", "proxy seed 0 vs long-budget truth", p[:, 0], truth_mean, "truth", 1))
        comps.append(
            comparison("truth_mean", f"mean of {S} proxy seeds vs long-budget truth", p.mean(axis=1), truth_mean, "truth", S)
        )
    return ProxySNRAnalysis(
        ids=tuple(ids),
        proxy=p,
        truth=t,
        snr=est,
        truth_snr=truth_est,
        comparisons=tuple(comps),
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    """Plain JSON: NaN becomes null, ±inf the strings "inf"/"-inf", arrays lists."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        d = {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return d
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def from_json_number(v: Any) -> float:
    """Inverse of the JSON encoding of one number (null -> NaN, "inf" -> inf)."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v)
    return float(v)


def analysis_to_dict(a: ProxySNRAnalysis) -> dict[str, Any]:
    """The analysis as JSON-able data (score matrices included, so every number can be recomputed)."""
    snr = _jsonable(a.snr)
    snr["f_statistic"] = _jsonable(a.snr.f_statistic)
    snr["p_value"] = _jsonable(a.snr.p_value) if a.snr.msw > 0 else None
    return {
        "ids": list(a.ids),
        "proxy_scores": _jsonable(a.proxy),
        "truth_scores": _jsonable(a.truth) if a.truth is not None else None,
        "snr": snr,
        "truth_snr": _jsonable(a.truth_snr) if a.truth_snr is not None else None,
        "comparisons": {c.name: _jsonable(c) for c in a.comparisons},
        "n_boot": a.n_boot,
        "ci": a.ci,
        "bootstrap_seed": a.seed,
    }


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProxySNRResult:
    """What ``cenas proxy-snr`` measured; ``analysis`` covers the architectures that trained at both budgets."""

    analysis: ProxySNRAnalysis
    failures: tuple[dict[str, str], ...]  # {"id", "budget", "error"} of dropped architectures
    source: str  # "corpus" or the run directory the candidates came from
    proxy_epochs: float
    truth_epochs: float
    proxy_seconds: float
    truth_seconds: float
    json_path: Path | None
    png_path: Path | None
    ceiling: CeilingResult | None = None


def select_architectures(cfg: RunConfig) -> tuple[list[Arch], str]:
    """The K architectures of the experiment: corpus entries or a run's trained candidates, capped."""
    p = cfg.proxy_snr
    if p.from_run:
        archs = _run_architectures(Path(p.from_run))
        source = str(p.from_run)
        kind = f"candidates of {p.from_run}"
    else:
        from cenas_jax.candidates.corpus import load_corpus

        archs = [Arch(e.name, e.source) for e in load_corpus()]
        source = "corpus"
        kind = "corpus entries"
    if p.architectures:
        known = {a.id: a for a in archs}
        unknown = [n for n in p.architectures if n not in known]
        if unknown:
            raise UserError(
                f"proxy_snr.architectures: unknown {kind} {unknown}; known: {', '.join(sorted(known)[:40])}"
                + (" ..." if len(known) > 40 else "")
            )
        archs = [known[n] for n in dict.fromkeys(p.architectures)]
    if p.max_architectures and len(archs) > p.max_architectures:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(archs), size=p.max_architectures, replace=False))
        archs = [archs[i] for i in keep]
    if len(archs) < MIN_ARCHITECTURES:
        raise UserError(f"proxy_snr: need at least {MIN_ARCHITECTURES} architectures, got {len(archs)} ({kind})")
    return archs, source


def _open_run(run_dir: Path):
    from cenas_jax.store import RunStore

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory")
    store = RunStore(run_dir, create=False)
    runs = store.runs()
    if not runs:
        store.close()
        raise UserError(f"{run_dir}: the run store holds no run")
    return store, runs[-1]["id"]


def _stored_seed_scores(store, run_id: int) -> dict[str, tuple[float, ...]]:
    """Candidate id -> per-seed accuracies of its latest successful proxy evaluation."""
    from cenas_jax.store import PROXY

    out: dict[str, tuple[float, ...]] = {}
    for cid, e in store.latest_evaluations(run_id, PROXY).items():
        seeds = tuple(float(x) for x in e.seed_accuracies if x is not None)
        out[cid] = seeds if seeds else ((float(e.accuracy),) if e.accuracy is not None else ())
    return out


def _run_architectures(run_dir: Path, with_scores: bool = False):
    store, run_id = _open_run(run_dir)
    try:
        scores = _stored_seed_scores(store, run_id)
        archs = [
            Arch(r["id"], r["source"], r["dataset"], r["cycle"])
            for r in store.candidates(run_id=run_id)
            if r["id"] in scores and scores[r["id"]]
        ]
    finally:
        store.close()
    if with_scores:
        return archs, scores
    return archs


def _proxy_truth_cfgs(cfg: RunConfig) -> tuple[TrainConfig, TrainConfig]:
    p = cfg.proxy_snr
    proxy = dataclasses.replace(cfg.train, epochs=p.proxy_epochs, seeds=p.seeds)
    truth = dataclasses.replace(cfg.train, epochs=p.truth_epochs, seeds=p.truth_seeds)
    return proxy, truth


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def run_proxy_snr(
    cfg: RunConfig,
    out_dir: str | Path | None,
    progress: bool = True,
    score_fn: ScoreFn | None = None,
    archs: Sequence[Arch] | None = None,
) -> ProxySNRResult:
    """Train K architectures × S seeds at the proxy and × T at the long budget; analyse; write JSON + PNG.

    ``cfg.proxy_snr`` says which architectures and budgets (the rest of the
    recipe is ``cfg.train``); ``out_dir`` receives ``proxy_snr.json`` and
    ``proxy_snr.png`` (None: nothing is written). ``score_fn`` defaults to the
    sandbox Evaluator; ``archs`` overrides the selection (tests).
    """
    p = cfg.proxy_snr
    if archs is None:
        archs, source = select_architectures(cfg)
    else:
        archs, source = list(archs), "given"
    score = score_fn or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress)
    proxy_cfg, truth_cfg = _proxy_truth_cfgs(cfg)

    _say(progress, f"proxy: {len(archs)} architectures x {p.seeds} seeds, {p.proxy_epochs:g} epoch(s) ...")
    t0 = time.perf_counter()
    proxy_scores = score(archs, proxy_cfg, cfg.seed)
    proxy_s = time.perf_counter() - t0
    failures = [
        {"id": a.id, "budget": "proxy", "error": s.error or ""} for a, s in zip(archs, proxy_scores) if s.error is not None
    ]
    ok = [i for i, s in enumerate(proxy_scores) if s.error is None]
    survivors = [archs[i] for i in ok]
    _say(progress, f"  {len(ok)}/{len(archs)} trained in {proxy_s:.0f}s")

    _say(progress, f"truth: {len(survivors)} architectures x {p.truth_seeds} seed(s), {p.truth_epochs:g} epoch(s) ...")
    t0 = time.perf_counter()
    truth_scores = score(survivors, truth_cfg, cfg.seed + TRUTH_SEED_OFFSET) if survivors else []
    truth_s = time.perf_counter() - t0
    failures += [
        {"id": a.id, "budget": "truth", "error": s.error or ""}
        for a, s in zip(survivors, truth_scores)
        if s.error is not None
    ]
    _say(progress, f"  {sum(s.error is None for s in truth_scores)}/{len(survivors)} trained in {truth_s:.0f}s")

    pm = _matrix([proxy_scores[i] for i in ok], p.seeds)
    tm = _matrix(truth_scores, p.truth_seeds)
    keep = np.all(np.isfinite(pm), axis=1) & np.all(np.isfinite(tm), axis=1) if survivors else np.zeros(0, bool)
    if int(keep.sum()) < MIN_ARCHITECTURES:
        detail = "; ".join(f"{f['id']} ({f['budget']}): {f['error'][:120]}" for f in failures[:6])
        raise UserError(
            f"proxy-snr: only {int(keep.sum())} architectures trained at both budgets, need {MIN_ARCHITECTURES}"
            + (f"; failures: {detail}" if detail else "")
        )
    ids = [a.id for a, k in zip(survivors, keep) if k]
    analysis = analyze(ids, pm[keep], tm[keep], n_boot=p.n_boot, ci=p.ci, seed=cfg.seed)

    json_path = png_path = None
    result = ProxySNRResult(
        analysis=analysis,
        failures=tuple(failures),
        source=source,
        proxy_epochs=p.proxy_epochs,
        truth_epochs=p.truth_epochs,
        proxy_seconds=proxy_s,
        truth_seconds=truth_s,
        json_path=None,
        png_path=None,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / RESULT_JSON
        png_path = out / RESULT_PNG
        result = dataclasses.replace(result, json_path=json_path, png_path=png_path)
        write_result_json(result, cfg, json_path)
        plot_rho_vs_snr(analysis, png_path)
    return result


def write_result_json(result: ProxySNRResult, cfg: RunConfig, path: Path) -> None:
    """``proxy_snr.json``: config, budgets, timings, failures and the full analysis."""
    doc = {
        "config": to_dict(cfg),
        "source": result.source,
        "proxy_epochs": result.proxy_epochs,
        "truth_epochs": result.truth_epochs,
        "proxy_seconds": result.proxy_seconds,
        "truth_seconds": result.truth_seconds,
        "failures": list(result.failures),
        "analysis": analysis_to_dict(result.analysis),
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))


# ---------------------------------------------------------------------------
# The ceiling effect: a run's candidates cycle by cycle
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CeilingRow:
    """One (cycle, dataset) group of a run: K trained candidates, their ANOVA and correlations (or why none)."""

    cycle: int  # -1: the corpus references the run trained before cycle 0
    dataset: str | None
    K: int
    analysis: ProxySNRAnalysis | None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class CeilingResult:
    """The ceiling effect: σ²_arch, SNR and ρ_S per cycle of a run, and a trend test of the SNR."""

    run_dir: str
    scores_from: str  # "stored" (the run's own per-seed proxy scores) or "retrained"
    seeds: int
    with_truth: bool
    rows: tuple[CeilingRow, ...]
    sigma2_arch_trend: theory.MannKendallResult | None  # Mann–Kendall on per-cycle σ²_arch (search cycles, one dataset)
    failures: tuple[dict[str, str], ...] = ()


def ceiling_effect(
    run_dir: str | Path,
    cfg: RunConfig,
    score_fn: ScoreFn | None = None,
    with_truth: bool = False,
    progress: bool = True,
) -> CeilingResult:
    """ρ_S of a run's candidates cycle by cycle, as σ²_arch shrinks.

    Uses the run's stored per-seed proxy scores when every trained candidate
    has ≥ 2 of them (truncated to the smallest common S); otherwise retrains
    every trained candidate with ``cfg.proxy_snr.seeds`` seeds at
    ``cfg.proxy_snr.proxy_epochs`` (the rest of the recipe from ``cfg.train``)
    through ``score_fn`` (default: the sandbox). ``with_truth`` also trains the
    long budget and adds the proxy-vs-truth comparisons per cycle. Groups are
    (cycle, dataset), so that datasets of a multi-dataset run do not inflate
    σ²_arch; groups with fewer than 3 candidates get a row with a note.
    """
    run_dir = Path(run_dir)
    p = cfg.proxy_snr
    archs, stored = _run_architectures(run_dir, with_scores=True)
    if not archs:
        raise UserError(f"{run_dir}: no successfully trained candidate in the run store")
    score = score_fn
    failures: list[dict[str, str]] = []
    counts = [len(stored[a.id]) for a in archs]
    proxy_cfg, truth_cfg = _proxy_truth_cfgs(cfg)
    if min(counts) >= 2:
        S = min(counts)
        proxy = {a.id: np.array(stored[a.id][:S]) for a in archs}
        scores_from = "stored"
        _say(progress, f"ceiling: {len(archs)} candidates with {S} stored proxy seeds each")
    else:
        score = score or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress)
        S = p.seeds
        _say(progress, f"ceiling: the run stored {min(counts)} seed(s) per candidate; retraining {len(archs)} x {S} seeds")
        res = score(archs, proxy_cfg, cfg.seed)
        proxy = {a.id: np.array(r.seed_accuracies) for a, r in zip(archs, res) if r.error is None}
        failures += [{"id": a.id, "budget": "proxy", "error": r.error or ""} for a, r in zip(archs, res) if r.error]
        scores_from = "retrained"
    truth: dict[str, np.ndarray] = {}
    if with_truth:
        score = score or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress)
        todo = [a for a in archs if a.id in proxy]
        _say(progress, f"ceiling: truth budget for {len(todo)} candidates ({p.truth_epochs:g} epochs)")
        res = score(todo, truth_cfg, cfg.seed + TRUTH_SEED_OFFSET)
        truth = {a.id: np.array(r.seed_accuracies) for a, r in zip(todo, res) if r.error is None}
        failures += [{"id": a.id, "budget": "truth", "error": r.error or ""} for a, r in zip(todo, res) if r.error]

    groups: dict[tuple[int, str | None], list[Arch]] = {}
    for a in archs:
        if a.id in proxy and (not with_truth or a.id in truth):
            groups.setdefault((a.cycle if a.cycle is not None else -1, a.dataset), []).append(a)
    rows = []
    for (cycle, dataset), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if len(members) < MIN_ARCHITECTURES:
            rows.append(CeilingRow(cycle, dataset, len(members), None, f"fewer than {MIN_ARCHITECTURES} candidates"))
            continue
        pm = np.stack([proxy[a.id] for a in members])
        tm = np.stack([truth[a.id] for a in members]) if with_truth else None
        try:
            an = analyze([a.id for a in members], pm, tm, n_boot=p.n_boot, ci=p.ci, seed=cfg.seed)
            rows.append(CeilingRow(cycle, dataset, len(members), an))
        except ValueError as e:
            rows.append(CeilingRow(cycle, dataset, len(members), None, str(e)))
    trend = None
    datasets = {r.dataset for r in rows}
    series = [(r.cycle, r.analysis.snr.sigma2_arch) for r in rows if r.analysis is not None and r.cycle >= 0]
    if len(datasets) == 1 and len(series) >= 3:
        trend = theory.monotonic_trend_test([v for _, v in series], times=[c for c, _ in series])
    return CeilingResult(
        run_dir=str(run_dir),
        scores_from=scores_from,
        seeds=S,
        with_truth=with_truth,
        rows=tuple(rows),
        sigma2_arch_trend=trend,
        failures=tuple(failures),
    )


def ceiling_to_dict(c: CeilingResult) -> dict[str, Any]:
    return {
        "run_dir": c.run_dir,
        "scores_from": c.scores_from,
        "seeds": c.seeds,
        "with_truth": c.with_truth,
        "sigma2_arch_trend": _jsonable(c.sigma2_arch_trend) if c.sigma2_arch_trend is not None else None,
        "failures": list(c.failures),
        "rows": [
            {
                "cycle": r.cycle,
                "dataset": r.dataset,
                "K": r.K,
                "note": r.note,
                "analysis": analysis_to_dict(r.analysis) if r.analysis is not None else None,
            }
            for r in c.rows
        ],
    }


def write_ceiling(c: CeilingResult, out_dir: str | Path) -> tuple[Path, Path | None]:
    """``ceiling.json`` and (when some cycle has an analysis) ``ceiling.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp = out / CEILING_JSON
    jp.write_text(json.dumps(ceiling_to_dict(c), indent=1, allow_nan=False))
    pp = out / CEILING_PNG
    return jp, (pp if plot_ceiling(c, pp) else None)


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
