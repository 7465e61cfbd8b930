"""Measured statistics with intervals: rank correlations (:func:`spearman`, :func:`kendall`, bootstrap CIs),
the Mann–Kendall trend test and per-cycle mean CI of Theorem 2 (:func:`monotonic_trend_test`, :func:`mean_ci`),
and binomial rates (:func:`wilson_interval`, :func:`rate_ratio_ci`, :func:`two_proportion_sample_size`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cenas_jax.theory._common import (
    _BOOT_BLOCK_ELEMENTS,
    _as_float_array,
    _bootstrap_distribution,
    _check_ci,
    _check_n_boot,
    _percentile_ci,
    _ret,
    _stats,
    _z,
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
