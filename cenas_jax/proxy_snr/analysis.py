"""Proxy reliability (result 6), the numbers: σ²_arch, σ²_noise, the SNR and ρ_S from accuracy matrices.

The model (DESIGN.md §6): the proxy score of architecture i in run j is
P_ij = Q_i + e_ij, Q ~ N(μ, σ²_arch), e ~ N(0, σ²_noise), SNR = σ²_arch/σ²_noise.
Result 6 predicts ρ_S(proxy, truth) = (6/π)·arcsin(sqrt(SNR/(1+SNR))/2) and
ρ_S(run, rerun) = (6/π)·arcsin(SNR/(1+SNR)/2). This module

- estimates the SNR by one-way ANOVA and measures the rank correlations
  (:func:`analyze`: every number from ``cenas_jax.theory``),
- groups a run's candidates by (cycle, dataset) for the "ceiling effect": the
  same quantities cycle by cycle, as the search concentrates and σ²_arch falls
  (:func:`ceiling_rows`, :func:`sigma2_arch_trend`).

Pure numpy: accuracies in, numbers out; no training, no files. The experiment
that produces the accuracies is ``proxy_snr/experiment.py``; the figures and
text tables are ``report/proxy_snr.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from cenas_jax import theory

# Spearman needs three pairs; fewer architectures in a (cycle, dataset) group give no row.
MIN_ARCHITECTURES = 3


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


def ceiling_rows(
    groups: Mapping[tuple[int, str | None], Sequence[str]],
    proxy: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray] | None,
    n_boot: int,
    ci: float,
    seed: int,
) -> tuple[CeilingRow, ...]:
    """One row per (cycle, dataset) group of candidate ids, in order of cycle then dataset.

    ``proxy`` (and ``truth``, None: no truth comparisons) map every id of the
    groups to its per-seed accuracies. A group of fewer than
    ``MIN_ARCHITECTURES`` candidates, or whose analysis is undefined, gets a
    row with a note instead of an analysis.
    """
    rows = []
    for (cycle, dataset), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if len(members) < MIN_ARCHITECTURES:
            rows.append(CeilingRow(cycle, dataset, len(members), None, f"fewer than {MIN_ARCHITECTURES} candidates"))
            continue
        pm = np.stack([proxy[i] for i in members])
        tm = np.stack([truth[i] for i in members]) if truth is not None else None
        try:
            an = analyze(list(members), pm, tm, n_boot=n_boot, ci=ci, seed=seed)
            rows.append(CeilingRow(cycle, dataset, len(members), an))
        except ValueError as e:
            rows.append(CeilingRow(cycle, dataset, len(members), None, str(e)))
    return tuple(rows)


def sigma2_arch_trend(rows: Sequence[CeilingRow]) -> theory.MannKendallResult | None:
    """Mann–Kendall on σ²_arch over the search cycles (cycle >= 0) of a one-dataset run; None with fewer than
    three analysed cycles or several datasets."""
    datasets = {r.dataset for r in rows}
    series = [(r.cycle, r.analysis.snr.sigma2_arch) for r in rows if r.analysis is not None and r.cycle >= 0]
    if len(datasets) == 1 and len(series) >= 3:
        return theory.monotonic_trend_test([v for _, v in series], times=[c for c, _ in series])
    return None
