"""Closed forms and estimators behind the paper's six results (numpy + scipy, no JAX).

The paper (arXiv 2605.30103) models iterative LLM-NAS as a parametric
cross-entropy method and proves six results; this module holds the pure
mathematics needed to check them on a run:

- Theorem 2 (monotone quality): :func:`monotonic_trend_test` (Mann–Kendall)
  and :func:`mean_ci` for the per-cycle mean quality.
- Theorem 3 (elite mass): :func:`elite_mass`, :func:`ce_elite_bound`,
  :func:`elite_bound_check`.
- Corollary 6 (delta vs full valid rate, first-order Markov token errors):
  :func:`markov_valid_rate`, :func:`calibrate_token_error`,
  :func:`predict_delta_rate`, :func:`predict_delta_ratio`,
  :func:`implied_length_ratio`; rates with :func:`wilson_interval`,
  :func:`rate_ratio_ci`, :func:`two_proportion_sample_size`.
- Result 6 (proxy reliability): :func:`spearman_from_pearson`,
  :func:`pearson_from_snr`, :func:`predicted_spearman_from_snr`,
  :func:`required_snr`, :func:`expected_sample_spearman`,
  :func:`estimate_snr`, and the measured side :func:`spearman`, :func:`kendall`.

(Result 5, diversity by mean pairwise Jaccard, is ``cenas_jax.programs.mean_pairwise_jaccard``.)

Conventions: vectorised functions take scalars or arrays and return a Python
``float`` for scalar input, an ``ndarray`` otherwise. Bad input raises
``ValueError`` naming the argument. Bootstrap resamples are drawn by
``scipy.stats.bootstrap`` from ``numpy.random.default_rng(seed)``, so the same
seed gives the same CI. Wilson and t intervals and Sen's slope are scipy's too.
Importing this module loads numpy only; scipy.stats is imported on first use.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CorrelationResult",
    "EliteBoundCheck",
    "MannKendallResult",
    "MeanCI",
    "SNREstimate",
    "calibrate_token_error",
    "ce_elite_bound",
    "elite_bound_check",
    "elite_mass",
    "estimate_snr",
    "expected_sample_spearman",
    "implied_length_ratio",
    "kendall",
    "markov_valid_rate",
    "mean_ci",
    "monotonic_trend_test",
    "pearson_from_snr",
    "predict_delta_rate",
    "predict_delta_ratio",
    "predicted_spearman_from_snr",
    "rate_ratio_ci",
    "required_snr",
    "spearman",
    "spearman_from_pearson",
    "two_proportion_sample_size",
    "wilson_interval",
]

_KINDS = ("truth", "retest")

# Bootstrap replicates are built as (chunk, K, S) blocks; this bounds a block's size.
_BOOT_BLOCK_ELEMENTS = 2_000_000


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _as_float_array(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number or an array of numbers, got {x!r}") from exc
    return arr


def _ret(arr: np.ndarray, scalar: bool):
    """Float for scalar input, array otherwise."""
    return float(arr) if scalar else arr


def _check_ci(ci: float) -> float:
    if not (isinstance(ci, (int, float, np.floating)) and 0.0 < float(ci) < 1.0):
        raise ValueError(f"ci: expected a confidence level in (0, 1), got {ci!r}")
    return float(ci)


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot: expected an integer >= 0, got {n_boot!r}")
    return int(n_boot)


def _stats():
    """scipy.stats, imported on first use: importing it costs about a second, and the
    closed forms (used by the report at start-up) do not need it."""
    from scipy import stats

    return stats


def _z(ci: float) -> float:
    """Two-sided standard-normal quantile for confidence level ``ci``."""
    return float(_stats().norm.ppf(0.5 + ci / 2.0))


def _bootstrap_distribution(data, statistic, n_boot: int, seed: int, batch: int | None = None) -> np.ndarray:
    """Replicates of ``statistic`` over ``n_boot`` paired resamples of the samples in ``data``.

    ``scipy.stats.bootstrap`` draws the resamples, ``batch`` at a time, from
    ``numpy.random.default_rng(seed)``; the draws do not depend on ``batch``.
    ``statistic`` takes the resampled samples and ``axis`` (vectorised) and may
    return NaN where it is undefined. Only scipy's bootstrap distribution is used:
    its interval is propagated NaN as soon as one replicate is NaN, while ours
    (:func:`_percentile_ci`) ignores undefined replicates and counts them.
    """
    st = _stats()
    rng_kw = "rng" if "rng" in inspect.signature(st.bootstrap).parameters else "random_state"  # scipy < 1.15
    with warnings.catch_warnings():
        # scipy's own interval (unused) warns when a replicate is NaN, and its standard
        # error when there is a single replicate.
        warnings.simplefilter("ignore", st.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = st.bootstrap(
            data, statistic, n_resamples=n_boot, batch=batch, vectorized=True, paired=True,
            method="percentile", **{rng_kw: np.random.default_rng(seed)},
        )
    return np.asarray(res.bootstrap_distribution, dtype=np.float64)


def _percentile_ci(reps: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile bootstrap interval; NaN replicates (undefined statistic) are ignored."""
    reps = np.asarray(reps, dtype=np.float64)
    if reps.size == 0 or np.all(np.isnan(reps)):
        return (math.nan, math.nan)
    alpha = 1.0 - ci
    q = [alpha / 2.0, 1.0 - alpha / 2.0]
    with np.errstate(invalid="ignore"):
        out = np.nanquantile(reps, q)
    # Interpolating between two infinite replicates (an SNR with zero noise) gives NaN.
    out = np.where(np.isnan(out), np.nanquantile(reps, q, method="nearest"), out)
    return (float(out[0]), float(out[1]))


# ---------------------------------------------------------------------------
# Result 6: proxy reliability, closed forms
# ---------------------------------------------------------------------------


def spearman_from_pearson(rho):
    """Population Spearman of a bivariate normal with Pearson ``rho``: (6/π)·arcsin(ρ/2).

    ``rho``: scalar or array in [-1, 1]. Exact for Gaussian pairs (Pearson 1907);
    ρ_S ≤ ρ for ρ ≥ 0, with equality at 0 and 1, and the gap is at most ≈ 0.018.
    For the expectation of a *sample* Spearman over n pairs see
    :func:`expected_sample_spearman`.
    """
    arr = _as_float_array(rho, "rho")
    if np.any(np.isnan(arr)) or np.any(np.abs(arr) > 1.0):
        raise ValueError(f"rho: a Pearson correlation must lie in [-1, 1], got {rho!r}")
    out = (6.0 / np.pi) * np.arcsin(arr / 2.0)
    return _ret(out, arr.ndim == 0)


def expected_sample_spearman(rho, n: int):
    """Expected sample Spearman of n bivariate-normal pairs with Pearson ``rho``.

    E[r_S] = 6 / (π (n+1)) · [arcsin ρ + (n − 2) · arcsin(ρ/2)]  (Moran 1948),
    which tends to :func:`spearman_from_pearson` as n → ∞. With the K ≈ 50
    architectures of one cycle the finite-n shift is below 0.01; use this when
    comparing a prediction with a Spearman measured on few architectures.
    """
    arr = _as_float_array(rho, "rho")
    if np.any(np.isnan(arr)) or np.any(np.abs(arr) > 1.0):
        raise ValueError(f"rho: a Pearson correlation must lie in [-1, 1], got {rho!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n: expected an integer number of pairs >= 2, got {n!r}")
    out = 6.0 / (np.pi * (n + 1)) * (np.arcsin(arr) + (n - 2) * np.arcsin(arr / 2.0))
    return _ret(out, arr.ndim == 0)


def _check_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
    return kind


def _check_snr(snr, name: str = "snr") -> np.ndarray:
    arr = _as_float_array(snr, name)
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: a signal-to-noise ratio must be >= 0 (inf allowed), got {snr!r}")
    return arr


def _reliability(snr_arr: np.ndarray) -> np.ndarray:
    """SNR/(1+SNR), with SNR = inf giving 1."""
    with np.errstate(invalid="ignore"):
        out = snr_arr / (1.0 + snr_arr)
    return np.where(np.isinf(snr_arr), 1.0, out)


def pearson_from_snr(snr, kind: str = "truth", n_seeds: int = 1):
    """Pearson correlation implied by the additive proxy model P_ij = Q_i + e_ij.

    Model: Q ~ N(μ, σ²_arch) over architectures, e ~ N(0, σ²_noise) per run,
    SNR = σ²_arch / σ²_noise (of ONE proxy run). ``snr``: scalar or array >= 0.

    - ``kind="truth"``: proxy vs the architecture's true quality Q:
      sqrt(SNR/(1+SNR)).
    - ``kind="retest"``: two independent proxy runs of the same architectures
      (the intraclass correlation): SNR/(1+SNR).

    ``n_seeds = S`` > 1 gives the same quantities for the mean of S seeds per
    architecture (on both sides for "retest"): averaging divides the noise
    variance by S, so the effective SNR is S·SNR.

    "truth" assumes the reference is noise-free Q. If the reference is itself a
    noisy measurement (a long-budget run with its own SNR_T), the Pearson is
    the product pearson_from_snr(SNR) · pearson_from_snr(SNR_T).
    """
    _check_kind(kind)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"n_seeds: expected an integer >= 1, got {n_seeds!r}")
    arr = _check_snr(snr)
    rel = _reliability(arr * n_seeds)
    out = np.sqrt(rel) if kind == "truth" else rel
    return _ret(out, arr.ndim == 0)


def predicted_spearman_from_snr(snr, kind: str = "truth", n_seeds: int = 1):
    """Spearman predicted by result 6: (6/π)·arcsin(pearson_from_snr(SNR)/2).

    Same arguments as :func:`pearson_from_snr`.
    """
    return spearman_from_pearson(pearson_from_snr(snr, kind=kind, n_seeds=n_seeds))


def required_snr(rho_s, kind: str = "truth"):
    """SNR (of one run) needed for a target Spearman ``rho_s`` in [0, 1): inverse of
    :func:`predicted_spearman_from_snr`.

    ρ_P = 2·sin(π ρ_S / 6); "truth": SNR = ρ_P² / (1 − ρ_P²); "retest":
    SNR = ρ_P / (1 − ρ_P). ``rho_s = 1`` gives inf. Divide by S for the SNR a
    run needs when each architecture's score is the mean of S seeds.
    """
    _check_kind(kind)
    arr = _as_float_array(rho_s, "rho_s")
    if np.any(np.isnan(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"rho_s: expected a Spearman correlation in [0, 1], got {rho_s!r}")
    rho_p = np.minimum(2.0 * np.sin(np.pi * arr / 6.0), 1.0)
    rel = rho_p**2 if kind == "truth" else rho_p
    with np.errstate(divide="ignore"):
        # 2·sin(π/6) rounds to 1 − 1e-16, so ρ_S = 1 is special-cased.
        out = np.where((arr == 1.0) | (rel >= 1.0), np.inf, rel / (1.0 - rel))
    return _ret(out, arr.ndim == 0)


# ---------------------------------------------------------------------------
# Result 6: estimating the SNR from K architectures × S seeds
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SNREstimate:
    """One-way random-effects ANOVA of proxy scores, K architectures × S seeds.

    Variances are in the units of the scores squared. ``snr`` is the SNR of a
    single proxy run, ``snr_mean`` that of the S-seed mean (= S·snr). CIs are
    percentile-bootstrap intervals at level ``ci`` from ``n_boot`` resamples of
    architectures (``None`` when ``n_boot == 0``).
    """

    K: int  # architectures used (after dropping rows with NaN)
    S: int  # seeds per architecture
    n_dropped: int  # architectures dropped because a seed score was NaN
    grand_mean: float
    msb: float  # mean square between architectures, df K-1
    msw: float  # mean square within architectures, df K(S-1)
    sigma2_arch: float  # max(sigma2_arch_raw, 0)
    sigma2_arch_raw: float  # (MSB - MSW) / S, may be negative
    sigma2_noise: float  # MSW
    snr: float  # sigma2_arch / sigma2_noise (inf if noise is 0, NaN if both are)
    snr_mean: float  # S * snr
    clipped: bool  # True when sigma2_arch_raw < 0 was clipped to 0
    ci: float
    n_boot: int
    sigma2_arch_ci: tuple[float, float] | None
    sigma2_noise_ci: tuple[float, float] | None
    snr_ci: tuple[float, float] | None
    snr_mean_ci: tuple[float, float] | None

    @property
    def f_statistic(self) -> float:
        """MSB / MSW, the one-way ANOVA F (df K-1, K(S-1))."""
        return self.msb / self.msw if self.msw > 0 else math.inf

    @property
    def p_value(self) -> float:
        """P(F >= observed) under σ²_arch = 0: is there any architecture signal at all."""
        return float(_stats().f.sf(self.f_statistic, self.K - 1, self.K * (self.S - 1)))

    def predicted_spearman(self, kind: str = "truth", seed_mean: bool = False) -> float:
        """Result 6's ρ_S at the estimated SNR (of one run, or of the S-seed mean)."""
        return predicted_spearman_from_snr(self.snr, kind=kind, n_seeds=self.S if seed_mean else 1)


def _anova_parts(x_BxKxS: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean, MSB and MSW of a batch of balanced K×S tables, each of shape (B,)."""
    _, K, S = x_BxKxS.shape
    row_mean_BxK = x_BxKxS.mean(axis=2)
    grand_B = row_mean_BxK.mean(axis=1)
    msb_B = S * np.sum((row_mean_BxK - grand_B[:, None]) ** 2, axis=1) / (K - 1)
    msw_B = np.sum((x_BxKxS - row_mean_BxK[:, :, None]) ** 2, axis=(1, 2)) / (K * (S - 1))
    return grand_B, msb_B, msw_B


def _snr_of(s2a: np.ndarray, s2n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = s2a / s2n
    # 0/0 is NaN (no variation at all); x/0 with x > 0 is inf.
    return np.where((s2n == 0) & (s2a > 0), np.inf, snr)


def estimate_snr(scores, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> SNREstimate:
    """σ²_arch, σ²_noise and the SNR from proxy scores by one-way random-effects ANOVA.

    ``scores``: array of shape (K architectures, S seeds), e.g. 1-epoch
    accuracies of K architectures each trained with S seeds. Balanced design:
    σ̂²_noise = MSW, σ̂²_arch = (MSB − MSW)/S, clipped at 0 (``clipped`` says so).
    Rows with any NaN (a failed seed) are dropped and counted in ``n_dropped``;
    ±inf is an error. Needs K ≥ 2 and S ≥ 2 after dropping.

    Bootstrap: architectures (rows) are resampled with replacement, the seeds
    of a row kept together, so the CI reflects both the spread of architectures
    and the seed noise. ``seed`` fixes the resampling. The percentile interval
    is slightly liberal for few architectures: on normal data with SNR 0.5 its
    95 % intervals covered the truth in ≈ 92–93 % of runs at K = 50, S = 3, and
    ≈ 94 % at K = 400, S = 5 (600 simulations each).
    """
    x = _as_float_array(scores, "scores")
    if x.ndim != 2:
        raise ValueError(f"scores: expected a 2-D array (K architectures, S seeds), got shape {x.shape}")
    if np.any(np.isinf(x)):
        raise ValueError("scores: contains ±inf; expected finite scores (NaN marks a failed seed)")
    ci = _check_ci(ci)
    n_boot = _check_n_boot(n_boot)
    keep = ~np.any(np.isnan(x), axis=1)
    n_dropped = int(np.sum(~keep))
    x = x[keep]
    K, S = x.shape
    if S < 2:
        raise ValueError(f"scores: need S >= 2 seeds per architecture to separate noise from signal, got S={S}")
    if K < 2:
        raise ValueError(
            f"scores: need K >= 2 architectures with all seeds finite, got K={K} "
            f"({n_dropped} dropped for NaN)"
        )

    grand, msb, msw = (float(v[0]) for v in _anova_parts(x[None]))
    s2a_raw = (msb - msw) / S
    s2a = max(s2a_raw, 0.0)
    snr = float(_snr_of(np.asarray(s2a), np.asarray(msw)))

    cis: dict[str, tuple[float, float] | None] = dict.fromkeys(("a", "n", "snr", "snr_mean"))
    if n_boot > 0:

        def variances(*seeds_BxK, axis):
            # The S seed columns, resampled together (paired) by architecture.
            _, msb_b, msw_b = _anova_parts(np.stack(seeds_BxK, axis=-1))
            return np.stack([np.maximum((msb_b - msw_b) / S, 0.0), msw_b])

        columns = tuple(x[:, s] for s in range(S))
        batch = max(1, _BOOT_BLOCK_ELEMENTS // (K * S))
        s2a_b, s2n_b = _bootstrap_distribution(columns, variances, n_boot, seed, batch)
        snr_b = _snr_of(s2a_b, s2n_b)
        cis["a"] = _percentile_ci(s2a_b, ci)
        cis["n"] = _percentile_ci(s2n_b, ci)
        cis["snr"] = _percentile_ci(snr_b, ci)
        cis["snr_mean"] = _percentile_ci(S * snr_b, ci)

    return SNREstimate(
        K=K,
        S=S,
        n_dropped=n_dropped,
        grand_mean=grand,
        msb=msb,
        msw=msw,
        sigma2_arch=s2a,
        sigma2_arch_raw=s2a_raw,
        sigma2_noise=msw,
        snr=snr,
        snr_mean=S * snr,
        clipped=s2a_raw < 0,
        ci=ci,
        n_boot=n_boot,
        sigma2_arch_ci=cis["a"],
        sigma2_noise_ci=cis["n"],
        snr_ci=cis["snr"],
        snr_mean_ci=cis["snr_mean"],
    )


# ---------------------------------------------------------------------------
# Measured rank correlations with bootstrap CIs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CorrelationResult:
    """A rank correlation, its percentile-bootstrap CI and scipy's p-value (H0: no association)."""

    method: str  # "spearman" | "kendall" (tau-b)
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int  # pairs used (pairs with a NaN are dropped)
    n_dropped: int
    ci: float
    n_boot: int
    n_boot_undefined: int  # resamples in which one side was constant (ignored by the CI)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray, int]:
    xa = _as_float_array(x, "x")
    ya = _as_float_array(y, "y")
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x, y: expected 1-D arrays, got shapes {xa.shape} and {ya.shape}")
    if xa.shape != ya.shape:
        raise ValueError(f"x, y: expected the same length, got {xa.size} and {ya.size}")
    if np.any(np.isinf(xa)) or np.any(np.isinf(ya)):
        raise ValueError("x, y: contain ±inf; expected finite values (NaN marks a missing pair)")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    if xa.size < 3:
        raise ValueError(f"x, y: need at least 3 complete pairs for a rank correlation, got {xa.size}")
    for name, v in (("x", xa), ("y", ya)):
        if np.all(v == v[0]):
            raise ValueError(f"{name}: all values are equal; a rank correlation is undefined")
    return xa, ya, int(np.sum(~keep))


def _rowwise_pearson(a_BxN: np.ndarray, b_BxN: np.ndarray) -> np.ndarray:
    a = a_BxN - a_BxN.mean(axis=1, keepdims=True)
    b = b_BxN - b_BxN.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum(a * b, axis=1) / den
    return np.where(den > 0, r, np.nan)


def _correlation_result(method, res, n, dropped, ci, n_boot, lo, hi, undefined) -> CorrelationResult:
    """A ``CorrelationResult`` from scipy's result ``res`` and the bootstrap's interval."""
    return CorrelationResult(
        method=method,
        estimate=float(res.statistic),
        ci_low=lo,
        ci_high=hi,
        p_value=float(res.pvalue),
        n=int(n),
        n_dropped=dropped,
        ci=ci,
        n_boot=n_boot,
        n_boot_undefined=undefined,
    )


def spearman(x, y, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> CorrelationResult:
    """Spearman ρ_S of paired samples with a percentile-bootstrap CI over pairs.

    ``x``, ``y``: 1-D, same length n ≥ 3; pairs with a NaN are dropped. Ties get
    average ranks (as ``scipy.stats.spearmanr``, whose estimate and p-value are
    returned). A constant input raises ``ValueError``.
    """
    xa, ya, dropped = _paired(x, y)
    ci = _check_ci(ci)
    n_boot = _check_n_boot(n_boot)
    st = _stats()
    res = st.spearmanr(xa, ya)
    lo = hi = math.nan
    undefined = 0
    if n_boot > 0:

        def rho_s(x_BxN, y_BxN, axis):
            # Spearman = Pearson of average ranks, exactly scipy's definition.
            return _rowwise_pearson(st.rankdata(x_BxN, axis=-1), st.rankdata(y_BxN, axis=-1))

        batch = max(1, _BOOT_BLOCK_ELEMENTS // xa.size)
        reps_b = _bootstrap_distribution((xa, ya), rho_s, n_boot, seed, batch)
        undefined = int(np.sum(np.isnan(reps_b)))
        lo, hi = _percentile_ci(reps_b, ci)
    return _correlation_result("spearman", res, xa.size, dropped, ci, n_boot, lo, hi, undefined)


def kendall(x, y, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> CorrelationResult:
    """Kendall τ-b of paired samples with a percentile-bootstrap CI over pairs.

    Same conventions as :func:`spearman`; estimate and p-value from
    ``scipy.stats.kendalltau`` (τ-b, ties handled by scipy).
    """
    xa, ya, dropped = _paired(x, y)
    ci = _check_ci(ci)
    n_boot = _check_n_boot(n_boot)
    st = _stats()
    res = st.kendalltau(xa, ya)
    lo = hi = math.nan
    undefined = 0
    if n_boot > 0:

        def tau_b(x_BxN, y_BxN, axis):
            # kendalltau takes one pair of 1-D samples; a constant side leaves tau undefined.
            out = np.full(x_BxN.shape[0], np.nan)
            for b, (xb, yb) in enumerate(zip(x_BxN, y_BxN)):
                if not (np.all(xb == xb[0]) or np.all(yb == yb[0])):
                    out[b] = st.kendalltau(xb, yb).statistic
            return out

        reps_b = _bootstrap_distribution((xa, ya), tau_b, n_boot, seed)
        undefined = int(np.sum(np.isnan(reps_b)))
        lo, hi = _percentile_ci(reps_b, ci)
    return _correlation_result("kendall", res, xa.size, dropped, ci, n_boot, lo, hi, undefined)


# ---------------------------------------------------------------------------
# Theorem 2: monotone quality across cycles
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MannKendallResult:
    """Mann–Kendall trend test of a series, with Sen's slope."""

    n: int  # points used (NaN dropped)
    s: int  # S = Σ_{i<j} sign(x_j − x_i)
    var_s: float  # Var(S) under H0, tie-corrected
    z: float  # continuity-corrected normal score
    p_two_sided: float  # H0: no monotone trend
    p_increasing: float  # one-sided, H1: increasing trend (Theorem 2's direction)
    tau: float  # Kendall τ-a of the series against its order: S / (n(n−1)/2)
    sen_slope: float  # median of pairwise slopes, units of the values per unit of ``times``


def monotonic_trend_test(values, times=None) -> MannKendallResult:
    """Mann–Kendall test for a monotone trend in per-cycle means (Theorem 2).

    ``values``: 1-D series, one value per cycle (e.g. mean quality of cycle t);
    NaN entries (an empty cycle) are dropped with their ``times``.
    ``times``: optional strictly increasing cycle indices (default 0..n−1);
    they only enter Sen's slope, the test itself uses the order.

    S = Σ_{i<j} sign(x_j − x_i); under H0 (i.i.d.), E[S] = 0 and
    Var(S) = [n(n−1)(2n+5) − Σ_g t_g(t_g−1)(2t_g+5)] / 18, the sum over groups of
    t_g tied values. Z = (S − sign(S))/sqrt(Var(S)) (continuity correction).
    The normal approximation is rough below n ≈ 10 (22 cycles is fine).
    Without ties, S = τ·n(n−1)/2 with τ = Kendall's tau of (times, values).
    Sen's slope: median over i<j of (x_j − x_i)/(t_j − t_i).
    """
    x = _as_float_array(values, "values")
    if x.ndim != 1:
        raise ValueError(f"values: expected a 1-D series, got shape {x.shape}")
    if times is None:
        t = np.arange(x.size, dtype=np.float64)
    else:
        t = _as_float_array(times, "times")
        if t.shape != x.shape:
            raise ValueError(f"times: expected the same length as values ({x.size}), got {t.size}")
        if np.any(~np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError("times: expected finite, strictly increasing values")
    if np.any(np.isinf(x)):
        raise ValueError("values: contains ±inf; expected finite values (NaN marks a missing cycle)")
    keep = ~np.isnan(x)
    x, t = x[keep], t[keep]
    n = x.size
    if n < 3:
        raise ValueError(f"values: need at least 3 non-NaN points for a trend test, got {n}")

    # scipy has no Mann-Kendall test: kendalltau(times, values) is S / (n(n-1)/2) without ties, but
    # its p-value has no continuity correction (and is exact below n = 50), so S, Var(S) and Z stay ours.
    norm = _stats().norm
    i, j = np.triu_indices(n, k=1)
    diff = x[j] - x[i]
    s = int(np.sum(np.sign(diff)))
    _, counts = np.unique(x, return_counts=True)
    ties = counts[counts > 1].astype(np.float64)
    var_s = (n * (n - 1) * (2 * n + 5) - float(np.sum(ties * (ties - 1) * (2 * ties + 5)))) / 18.0
    if s > 0:
        z = (s - 1) / math.sqrt(var_s)
    elif s < 0:
        z = (s + 1) / math.sqrt(var_s)
    else:
        z = 0.0
    return MannKendallResult(
        n=n,
        s=s,
        var_s=var_s,
        z=z,
        p_two_sided=float(2.0 * norm.sf(abs(z))),
        p_increasing=float(norm.sf(z)),
        tau=s / (n * (n - 1) / 2.0),
        sen_slope=float(_stats().theilslopes(x, t).slope),
    )


@dataclasses.dataclass(frozen=True)
class MeanCI:
    """Sample mean with a Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    sem: float  # standard error of the mean, sd(ddof=1)/sqrt(n)
    ci: float


def mean_ci(values, ci: float = 0.95) -> MeanCI:
    """Mean of ``values`` (1-D, NaN dropped) with a t-interval at level ``ci``.

    Used for the per-cycle quality. With n = 1 the interval is (NaN, NaN).
    """
    ci = _check_ci(ci)
    x = _as_float_array(values, "values").ravel()
    if np.any(np.isinf(x)):
        raise ValueError("values: contains ±inf; expected finite values")
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        raise ValueError("values: no non-NaN value to average")
    m = float(np.mean(x))
    if n == 1:
        return MeanCI(mean=m, low=math.nan, high=math.nan, n=1, sem=math.nan, ci=ci)
    sem = float(np.std(x, ddof=1) / math.sqrt(n))
    if sem == 0.0:  # identical values: scipy refuses a zero scale (NaN), the interval is the point
        return MeanCI(mean=m, low=m, high=m, n=n, sem=0.0, ci=ci)
    low, high = _stats().t.interval(ci, df=n - 1, loc=m, scale=sem)
    return MeanCI(mean=m, low=float(low), high=float(high), n=n, sem=sem, ci=ci)


# ---------------------------------------------------------------------------
# Theorem 3: elite mass
# ---------------------------------------------------------------------------


def ce_elite_bound(rho0, t):
    """Theorem 3's lower bound on the elite mass after t cycles: 1 − (1 − ρ_0)^t.

    ``rho0``: elite mass of cycle 0 in [0, 1]; ``t``: cycles >= 0 (scalar or
    array; broadcast with ``rho0``). The bound is 0 at t = 0 and ρ_0 at t = 1,
    so it says something about cycle t ≥ 1 only.
    """
    r = _as_float_array(rho0, "rho0")
    tt = _as_float_array(t, "t")
    if np.any(np.isnan(r)) or np.any(r < 0) or np.any(r > 1):
        raise ValueError(f"rho0: expected a probability in [0, 1], got {rho0!r}")
    if np.any(np.isnan(tt)) or np.any(tt < 0):
        raise ValueError(f"t: expected cycle counts >= 0, got {t!r}")
    # -expm1(t·log1p(-ρ)) is 1 − (1−ρ)^t without cancellation for small ρ.
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.expm1(tt * np.log1p(-r))
    out = np.where((r == 1) & (tt > 0), 1.0, np.where(tt == 0, 0.0, out))
    return _ret(out, r.ndim == 0 and tt.ndim == 0)


def elite_mass(qualities_per_cycle: Sequence, gamma_star: float, n_generated_per_cycle) -> np.ndarray:
    """Elite mass C_t: the share of cycle t's generations whose quality reaches γ*.

    ``qualities_per_cycle``: one 1-D array per cycle holding Q of the
    candidates that got a quality (NaN entries count as without one);
    ``n_generated_per_cycle``: all generations of each cycle, invalid,
    rejected and failed ones included. Generations without a quality count as
    outside E* = {Q ≥ γ*}. Returns C_t, shape (T,). For Wilson CIs use
    ``wilson_interval(C_t * n, n)``, or :func:`elite_bound_check`.
    """
    counts, n_gen = _elite_counts(qualities_per_cycle, gamma_star, n_generated_per_cycle)
    return counts / n_gen


def _elite_counts(qualities_per_cycle, gamma_star, n_generated_per_cycle) -> tuple[np.ndarray, np.ndarray]:
    if not math.isfinite(float(gamma_star)):
        raise ValueError(f"gamma_star: expected a finite threshold, got {gamma_star!r}")
    n_gen = _as_float_array(n_generated_per_cycle, "n_generated_per_cycle")
    if n_gen.ndim != 1 or n_gen.size != len(qualities_per_cycle):
        raise ValueError(
            "n_generated_per_cycle: expected one count per cycle "
            f"({len(qualities_per_cycle)} cycles), got shape {n_gen.shape}"
        )
    if np.any(n_gen <= 0) or np.any(n_gen != np.round(n_gen)):
        raise ValueError(f"n_generated_per_cycle: expected positive integers, got {n_gen.tolist()}")
    counts = np.empty(n_gen.size)
    for c, q in enumerate(qualities_per_cycle):
        qa = _as_float_array(q, f"qualities_per_cycle[{c}]").ravel()
        if qa.size > n_gen[c]:
            raise ValueError(
                f"qualities_per_cycle[{c}]: {qa.size} qualities but only "
                f"{int(n_gen[c])} generations in that cycle"
            )
        counts[c] = np.sum(qa[~np.isnan(qa)] >= gamma_star)
    return counts, n_gen


@dataclasses.dataclass(frozen=True)
class EliteBoundCheck:
    """Measured elite mass per cycle against Theorem 3's bound, arrays of shape (T,)."""

    mass: np.ndarray  # C_t
    low: np.ndarray  # Wilson CI of C_t
    high: np.ndarray
    bound: np.ndarray  # 1 − (1 − ρ_0)^t with ρ_0 = C_0
    rho0: float
    holds: np.ndarray  # C_t ≥ bound (t ≥ 1; True at t = 0)
    holds_within_ci: np.ndarray  # upper Wilson limit ≥ bound
    ci: float


def elite_bound_check(
    qualities_per_cycle: Sequence, gamma_star: float, n_generated_per_cycle, ci: float = 0.95
) -> EliteBoundCheck:
    """C_t per cycle with Wilson CIs, and Theorem 3's bound with ρ_0 = C_0 (γ* = γ_0)."""
    ci = _check_ci(ci)
    counts, n_gen = _elite_counts(qualities_per_cycle, gamma_star, n_generated_per_cycle)
    mass = counts / n_gen
    low, high = wilson_interval(counts, n_gen, ci=ci)
    rho0 = float(mass[0])
    bound = ce_elite_bound(rho0, np.arange(mass.size))
    return EliteBoundCheck(
        mass=mass,
        low=low,
        high=high,
        bound=bound,
        rho0=rho0,
        holds=mass >= bound,
        holds_within_ci=high >= bound,
        ci=ci,
    )


# ---------------------------------------------------------------------------
# Corollary 6: valid-generation rate under first-order Markov token errors
# ---------------------------------------------------------------------------


def _check_rate(r, name: str) -> np.ndarray:
    arr = _as_float_array(r, name)
    if np.any(np.isnan(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ValueError(f"{name}: expected a valid-generation rate in (0, 1], got {r!r}")
    return arr


def _check_tokens(n, name: str) -> np.ndarray:
    arr = _as_float_array(n, name)
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}: expected a mean number of tokens > 0, got {n!r}")
    return arr


def markov_valid_rate(n, eps):
    """Valid-generation rate of an n-token program with per-token error ε: (1 − ε)^n.

    ``n``: tokens > 0 (a mean n̄ is fine); ``eps``: in [0, 1). Broadcasts.
    """
    nn = _check_tokens(n, "n")
    e = _as_float_array(eps, "eps")
    if np.any(np.isnan(e)) or np.any(e < 0) or np.any(e >= 1):
        raise ValueError(f"eps: expected a per-token error probability in [0, 1), got {eps!r}")
    out = np.exp(nn * np.log1p(-e))
    return _ret(out, nn.ndim == 0 and e.ndim == 0)


def calibrate_token_error(r_full, n_full):
    """Per-token error ε̂ = 1 − r_full^(1/n̄_full) from a full-code run's valid rate.

    ``r_full`` in (0, 1]; ``n_full``: mean completion tokens > 0. Inverse of
    :func:`markov_valid_rate`: markov_valid_rate(n_full, ε̂) == r_full.
    E.g. r_full = 0.506 over n̄ = 1,000 tokens gives ε̂ ≈ 6.8e-4.
    """
    r = _check_rate(r_full, "r_full")
    nn = _check_tokens(n_full, "n_full")
    out = -np.expm1(np.log(r) / nn)
    return _ret(out, r.ndim == 0 and nn.ndim == 0)


def predict_delta_rate(r_full, n_full, n_delta):
    """Predicted delta-mode valid rate r̂_δ = (1 − ε̂)^n̄_δ = r_full^(n̄_δ / n̄_full).

    ε̂ is calibrated on the full-code run (:func:`calibrate_token_error`);
    ``n_delta``: mean completion tokens of delta generations. The model covers
    token errors only: a delta that fails to apply to its parent is a failure
    it does not describe, so compare with the measured rate both with and
    without application failures.
    """
    r = _check_rate(r_full, "r_full")
    nf = _check_tokens(n_full, "n_full")
    nd = _check_tokens(n_delta, "n_delta")
    out = np.exp(np.log(r) * nd / nf)
    return _ret(out, r.ndim == 0 and nf.ndim == 0 and nd.ndim == 0)


def predict_delta_ratio(r_full, n_full, n_delta):
    """Predicted ratio r̂_δ / r_full = r_full^(n̄_δ/n̄_full − 1) (Corollary 6: > 1 iff n̄_δ < n̄_full).

    The ratio can never exceed 1/r_full (the limit n̄_δ → 0, i.e. r̂_δ → 1).
    The paper measured r_δ = 0.713 against r_full = 0.506, ratio 1.41, and
    quotes a "calibrated 2.23": that cannot be a ratio of valid rates, since
    2.23 × 0.506 = 1.13 > 1 (and 2.23 > 1/0.506 ≈ 1.98, the model's ceiling).
    Report this function's value beside the measured ratio instead; the
    predicted rate itself is :func:`predict_delta_rate`.
    """
    r = _check_rate(r_full, "r_full")
    nf = _check_tokens(n_full, "n_full")
    nd = _check_tokens(n_delta, "n_delta")
    out = np.exp(np.log(r) * (nd / nf - 1.0))
    return _ret(out, r.ndim == 0 and nf.ndim == 0 and nd.ndim == 0)


def implied_length_ratio(r_full, ratio):
    """n̄_δ / n̄_full at which the Markov model gives r_δ / r_full = ``ratio``.

    Solves r_full^(x − 1) = ratio: x = 1 + log(ratio)/log(r_full). Needs
    0 < r_full < 1 and 0 < ratio < 1/r_full (else no positive length fits).
    The paper's 1.41 at r_full = 0.506 gives x ≈ 0.50: its deltas would have to
    be half as long as full programs in tokens.
    """
    r = _check_rate(r_full, "r_full")
    q = _as_float_array(ratio, "ratio")
    if np.any(r >= 1):
        raise ValueError(f"r_full: must be < 1 for the length ratio to be identified, got {r_full!r}")
    if np.any(np.isnan(q)) or np.any(q <= 0) or np.any(q * r >= 1):
        raise ValueError(
            f"ratio: expected 0 < ratio < 1/r_full (a valid rate above 1 is impossible), got {ratio!r}"
        )
    out = 1.0 + np.log(q) / np.log(r)
    return _ret(out, r.ndim == 0 and q.ndim == 0)


# ---------------------------------------------------------------------------
# Rates: intervals and sample sizes
# ---------------------------------------------------------------------------


def _check_counts(k, n) -> tuple[np.ndarray, np.ndarray]:
    ka = _as_float_array(k, "successes")
    na = _as_float_array(n, "n")
    if np.any(~np.isfinite(na)) or np.any(na <= 0) or np.any(na != np.round(na)):
        raise ValueError(f"n: expected positive integer trial counts, got {n!r}")
    if np.any(~np.isfinite(ka)) or np.any(ka < 0) or np.any(ka != np.round(ka)):
        raise ValueError(f"successes: expected integer counts >= 0, got {k!r}")
    if np.any(ka > na):
        raise ValueError(f"successes: a count exceeds its number of trials ({k!r} > {n!r})")
    return ka, na


def wilson_interval(successes, n, ci: float = 0.95):
    """Wilson score interval for a binomial rate k/n; returns (low, high).

    ``successes``, ``n``: integer counts (broadcast), 0 ≤ k ≤ n, n > 0. Each
    element is ``scipy.stats.binomtest(k, n).proportion_ci(ci, method="wilson")``:
    with z the two-sided normal quantile and p = k/n,
    centre = (p + z²/2n) / (1 + z²/n),
    half-width = z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n);
    k = 0 gives a low of exactly 0, k = n a high of exactly 1.
    """
    ci = _check_ci(ci)
    k, n_ = _check_counts(successes, n)
    k_b, n_b = np.broadcast_arrays(k, n_)
    low, high = np.empty(k_b.shape), np.empty(k_b.shape)
    binomtest = _stats().binomtest
    for i in np.ndindex(k_b.shape):
        low[i], high[i] = binomtest(int(k_b[i]), int(n_b[i])).proportion_ci(ci, method="wilson")
    scalar = k.ndim == 0 and n_.ndim == 0
    return _ret(low, scalar), _ret(high, scalar)


def rate_ratio_ci(k1, n1, k2, n2, ci: float = 0.95) -> tuple[float, float, float]:
    """Ratio of two independent rates (k1/n1)/(k2/n2) with the Katz log interval.

    Returns (ratio, low, high); log-ratio SE = sqrt(1/k1 − 1/n1 + 1/k2 − 1/n2).
    For r_δ / r_full, pass the delta counts first. Needs k1, k2 > 0.
    """
    ci = _check_ci(ci)
    a, na = _check_counts(k1, n1)
    b, nb = _check_counts(k2, n2)
    if any(v.ndim for v in (a, na, b, nb)):
        raise ValueError("rate_ratio_ci: expected scalar counts")
    if a == 0 or b == 0:
        raise ValueError("rate_ratio_ci: both success counts must be > 0 for a log-ratio interval")
    ratio = float((a / na) / (b / nb))
    se = math.sqrt(1 / a - 1 / na + 1 / b - 1 / nb)
    z = _z(ci)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def two_proportion_sample_size(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Generations per mode to tell rate p1 from p2 (two-sided z-test, pooled variance under H0).

    n = [z_{1−α/2}·sqrt(2 p̄ q̄) + z_{power}·sqrt(p1 q1 + p2 q2)]² / (p1 − p2)², rounded up,
    p̄ = (p1 + p2)/2. For 0.713 vs 0.506 at α = 0.05 and 80 % power this is 87.
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not (0.0 < float(p) < 1.0):
            raise ValueError(f"{name}: expected a rate in (0, 1), got {p!r}")
    if p1 == p2:
        raise ValueError("p1, p2: equal rates cannot be told apart at any sample size")
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    if not (0.0 < power < 1.0):
        raise ValueError(f"power: expected a probability in (0, 1), got {power!r}")
    pbar = (p1 + p2) / 2.0
    za = float(_stats().norm.ppf(1.0 - alpha / 2.0))
    zb = float(_stats().norm.ppf(power))
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return int(math.ceil(num * num / (p1 - p2) ** 2))
