"""Closed forms of the paper against Monte Carlo; estimators against simulated data with known σ²."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cenas_jax import theory as T

# ---------------------------------------------------------------------------
# Result 6: closed forms
# ---------------------------------------------------------------------------

RHOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]


def test_spearman_from_pearson_matches_bivariate_normal_monte_carlo():
    # 10^5 pairs: the sample Spearman's SD is ≤ 1/sqrt(n) ≈ 0.0032, so 0.01 is > 3 SD.
    n = 100_000
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    for rho in RHOS:
        y = rho * z1 + math.sqrt(1 - rho**2) * z2
        measured = stats.spearmanr(z1, y).statistic
        assert abs(measured - T.spearman_from_pearson(rho)) < 0.01, rho


def test_spearman_from_pearson_shapes_and_values():
    assert isinstance(T.spearman_from_pearson(0.5), float)
    assert T.spearman_from_pearson(0.0) == 0.0
    assert T.spearman_from_pearson(1.0) == pytest.approx(1.0, abs=1e-15)
    assert T.spearman_from_pearson(-0.5) == pytest.approx(-T.spearman_from_pearson(0.5))
    out = T.spearman_from_pearson(np.array(RHOS))
    assert isinstance(out, np.ndarray) and out.shape == (len(RHOS),)
    # Spearman sits just below Pearson for 0 < rho < 1, by at most ~0.018.
    gap = np.array(RHOS) - out
    assert np.all(gap[1:-1] > 0) and gap.max() < 0.02
    assert T.spearman_from_pearson(0.5) == pytest.approx(6 / math.pi * math.asin(0.25), rel=1e-15)
    with pytest.raises(ValueError, match="rho"):
        T.spearman_from_pearson(1.2)


def test_expected_sample_spearman_small_n_monte_carlo():
    # n = 8 pairs, 40,000 replicates: SE of the mean sample Spearman ≈ 0.3/200 = 0.0015.
    n, reps, rho = 8, 40_000, 0.7
    rng = np.random.default_rng(1)
    z1 = rng.standard_normal((reps, n))
    y = rho * z1 + math.sqrt(1 - rho**2) * rng.standard_normal((reps, n))
    r1 = stats.rankdata(z1, axis=1) - (n + 1) / 2
    r2 = stats.rankdata(y, axis=1) - (n + 1) / 2
    rs = np.sum(r1 * r2, axis=1) / np.sqrt(np.sum(r1**2, axis=1) * np.sum(r2**2, axis=1))
    expected = T.expected_sample_spearman(rho, n)
    assert abs(rs.mean() - expected) < 0.006
    # and it differs measurably from the population value at this n
    assert abs(expected - T.spearman_from_pearson(rho)) > 0.01
    assert T.expected_sample_spearman(rho, 10**9) == pytest.approx(T.spearman_from_pearson(rho), abs=1e-8)


@pytest.mark.parametrize("snr", [0.25, 1.0, 4.0])
def test_pearson_from_snr_against_simulated_proxy(snr):
    # N = 10^5 architectures; SD of a sample Pearson ≈ (1 − ρ²)/sqrt(N) ≤ 0.0032, tolerance 0.01.
    n = 100_000
    rng = np.random.default_rng(2)
    q = rng.normal(0.5, math.sqrt(snr) * 0.1, n)  # sigma_noise = 0.1
    p1 = q + rng.normal(0, 0.1, n)
    p2 = q + rng.normal(0, 0.1, n)
    p_mean4 = q + rng.normal(0, 0.1, (n, 4)).mean(axis=1)
    assert abs(np.corrcoef(p1, q)[0, 1] - T.pearson_from_snr(snr, "truth")) < 0.01
    assert abs(np.corrcoef(p1, p2)[0, 1] - T.pearson_from_snr(snr, "retest")) < 0.01
    assert abs(np.corrcoef(p_mean4, q)[0, 1] - T.pearson_from_snr(snr, "truth", n_seeds=4)) < 0.01
    assert abs(stats.spearmanr(p1, q).statistic - T.predicted_spearman_from_snr(snr, "truth")) < 0.01
    assert abs(stats.spearmanr(p1, p2).statistic - T.predicted_spearman_from_snr(snr, "retest")) < 0.01


def test_pearson_from_snr_limits_and_errors():
    assert T.pearson_from_snr(0.0) == 0.0
    assert T.pearson_from_snr(math.inf) == 1.0
    assert T.pearson_from_snr(1.0) == pytest.approx(math.sqrt(0.5))
    assert T.pearson_from_snr(1.0, "retest") == pytest.approx(0.5)
    assert T.pearson_from_snr(1.0, "retest", n_seeds=3) == pytest.approx(0.75)
    out = T.pearson_from_snr(np.array([0.0, 1.0, np.inf]), "retest")
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="kind"):
        T.pearson_from_snr(1.0, "other")
    with pytest.raises(ValueError, match="snr"):
        T.pearson_from_snr(-0.1)
    with pytest.raises(ValueError, match="n_seeds"):
        T.pearson_from_snr(1.0, n_seeds=0)


@pytest.mark.parametrize("kind", ["truth", "retest"])
def test_required_snr_inverts_prediction(kind):
    targets = np.array([0.0, 0.3, 0.635, 0.9, 0.926])
    snr = T.required_snr(targets, kind)
    np.testing.assert_allclose(T.predicted_spearman_from_snr(snr, kind), targets, atol=1e-12)
    assert T.required_snr(1.0, kind) == math.inf


# ---------------------------------------------------------------------------
# Result 6: ANOVA estimate of the SNR
# ---------------------------------------------------------------------------


def _simulate(rng, K, S, s2a, s2n, mu=0.4):
    return mu + rng.normal(0, math.sqrt(s2a), (K, 1)) + rng.normal(0, math.sqrt(s2n), (K, S))


def test_estimate_snr_recovers_known_variances():
    K, S, s2a, s2n = 400, 5, 1.0, 2.0
    x = _simulate(np.random.default_rng(3), K, S, s2a, s2n)
    est = T.estimate_snr(x, n_boot=500, seed=0)
    # Large-sample SEs of the ANOVA estimators (normal data):
    se_noise = s2n * math.sqrt(2 / (K * (S - 1)))  # ≈ 0.071
    se_arch = math.sqrt(2 / S**2 * ((S * s2a + s2n) ** 2 / (K - 1) + s2n**2 / (K * (S - 1))))  # ≈ 0.100
    assert abs(est.sigma2_noise - s2n) < 3 * se_noise
    assert abs(est.sigma2_arch - s2a) < 3 * se_arch
    assert est.K == K and est.S == S and est.n_dropped == 0 and not est.clipped
    assert est.snr == pytest.approx(est.sigma2_arch / est.sigma2_noise)
    assert est.snr_mean == pytest.approx(S * est.snr)
    # The ANOVA itself agrees with scipy's one-way F.
    f = stats.f_oneway(*x)
    assert est.f_statistic == pytest.approx(f.statistic, rel=1e-10)
    assert est.p_value == pytest.approx(f.pvalue, rel=1e-6, abs=1e-300)
    # Bootstrap CIs bracket the point estimates, and their width matches the SE scale.
    for (lo, hi), point, se in (
        (est.sigma2_arch_ci, est.sigma2_arch, se_arch),
        (est.sigma2_noise_ci, est.sigma2_noise, se_noise),
    ):
        assert lo < point < hi
        assert 2.5 * se < hi - lo < 6 * se
    lo, hi = est.snr_ci
    assert lo < est.snr < hi
    np.testing.assert_allclose(est.snr_mean_ci, (S * lo, S * hi))
    assert est.predicted_spearman("truth", seed_mean=True) == pytest.approx(
        T.predicted_spearman_from_snr(est.snr * S, "truth")
    )


def test_estimate_snr_bootstrap_ci_coverage():
    # 100 small simulations; the percentile interval's measured coverage at K=200, S=4 is
    # ≈ 0.94 (600-run check), so ≥ 88/100 leaves > 2 binomial SDs of room.
    K, S, s2a, s2n = 200, 4, 1.0, 2.0
    rng = np.random.default_rng(4)
    hits = np.zeros(3, dtype=int)
    for r in range(100):
        est = T.estimate_snr(_simulate(rng, K, S, s2a, s2n), n_boot=300, seed=r)
        hits += [
            est.sigma2_arch_ci[0] <= s2a <= est.sigma2_arch_ci[1],
            est.sigma2_noise_ci[0] <= s2n <= est.sigma2_noise_ci[1],
            est.snr_ci[0] <= s2a / s2n <= est.snr_ci[1],
        ]
    assert np.all(hits >= 88), hits


def test_estimate_snr_clips_negative_arch_variance():
    # Every row is a permutation of the same values: identical row means, MSB = 0.
    x = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2], [0.2, 0.3, 0.1], [0.1, 0.3, 0.2]])
    est = T.estimate_snr(x, n_boot=200)
    assert est.msb == pytest.approx(0.0, abs=1e-15)
    assert est.sigma2_arch_raw == pytest.approx(-est.msw / 3)
    assert est.clipped and est.sigma2_arch == 0.0 and est.snr == 0.0
    assert est.sigma2_arch_ci[0] == 0.0
    # With sigma2_arch = 0 in truth, about half of the random draws clip.
    rng = np.random.default_rng(5)
    clipped = [T.estimate_snr(_simulate(rng, 30, 3, 0.0, 1.0), n_boot=0).clipped for _ in range(200)]
    assert 0.3 < np.mean(clipped) < 0.7


def test_estimate_snr_drops_nan_rows_and_rejects_bad_shapes():
    rng = np.random.default_rng(6)
    x = _simulate(rng, 20, 3, 1.0, 1.0)
    with_nan = np.vstack([x, [[np.nan, 0.3, 0.4]], [[0.1, np.nan, np.nan]]])
    a = T.estimate_snr(x, n_boot=0)
    b = T.estimate_snr(with_nan, n_boot=0)
    assert b.n_dropped == 2 and b.K == 20
    assert b.sigma2_arch == a.sigma2_arch and b.sigma2_noise == a.sigma2_noise
    assert a.sigma2_arch_ci is None and a.snr_ci is None
    with pytest.raises(ValueError, match="S >= 2"):
        T.estimate_snr(x[:, :1])
    with pytest.raises(ValueError, match="K >= 2"):
        T.estimate_snr(np.vstack([x[:1], [[np.nan, 1.0, 2.0]]]))
    with pytest.raises(ValueError, match="2-D"):
        T.estimate_snr(x.ravel())
    with pytest.raises(ValueError, match="inf"):
        T.estimate_snr(np.where(x > 1, np.inf, x))
    # The same seed gives the same CI.
    assert T.estimate_snr(x, n_boot=100, seed=7).snr_ci == T.estimate_snr(x, n_boot=100, seed=7).snr_ci


def test_estimate_snr_no_noise():
    x = np.repeat(np.arange(5.0)[:, None], 3, axis=1)  # seeds agree exactly
    est = T.estimate_snr(x, n_boot=50)
    assert est.sigma2_noise == 0.0 and est.snr == math.inf
    const = T.estimate_snr(np.ones((4, 3)), n_boot=0)
    assert math.isnan(const.snr)


# ---------------------------------------------------------------------------
# Rank correlations
# ---------------------------------------------------------------------------


def test_spearman_and_kendall_match_scipy_with_ties_and_bootstrap():
    rng = np.random.default_rng(8)
    x = np.round(rng.normal(size=60), 1)  # rounding makes ties
    y = np.round(x + rng.normal(scale=0.8, size=60), 1)
    s = T.spearman(x, y, n_boot=2000, seed=1)
    k = T.kendall(x, y, n_boot=300, seed=1)
    ref_s, ref_k = stats.spearmanr(x, y), stats.kendalltau(x, y)
    assert s.estimate == pytest.approx(ref_s.statistic) and s.p_value == pytest.approx(ref_s.pvalue)
    assert k.estimate == pytest.approx(ref_k.statistic) and k.p_value == pytest.approx(ref_k.pvalue)
    assert s.method == "spearman" and k.method == "kendall" and s.n == 60
    for r in (s, k):
        assert r.ci_low < r.estimate < r.ci_high
    # Bootstrap SD of Spearman ≈ (1 − ρ²)/sqrt(n − 3) for normal data; the 95 % width ≈ 3.92 SD.
    width = 3.92 * (1 - s.estimate**2) / math.sqrt(57)
    assert 0.6 * width < s.ci_high - s.ci_low < 1.6 * width


def test_spearman_bootstrap_equals_scipy_per_resample():
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, 5, 25), rng.integers(0, 5, 25)
    res = T.spearman(x, y, n_boot=200, ci=0.9, seed=3)
    # Recompute the replicates one by one with scipy: same rng stream, same indices.
    idx = np.random.default_rng(3).integers(0, 25, size=(200, 25))
    reps = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    assert res.n_boot_undefined == int(np.sum(np.isnan(reps)))
    lo, hi = np.nanquantile(reps, [0.05, 0.95])
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_rank_correlation_input_errors():
    with pytest.raises(ValueError, match="same length"):
        T.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="all values are equal"):
        T.kendall([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least 3"):
        T.spearman([1, 2, np.nan], [3, 4, 5])
    r = T.spearman([1, 2, 3, 4, np.nan], [1, 3, 2, 4, 9], n_boot=0)
    assert r.n == 4 and r.n_dropped == 1 and math.isnan(r.ci_low)


# ---------------------------------------------------------------------------
# Theorem 2: Mann–Kendall
# ---------------------------------------------------------------------------


def test_mann_kendall_hand_computed_without_ties():
    # x = 1 3 2 4 5: of the 10 pairs only (3, 2) decreases, S = 9 − 1 = 8;
    # Var(S) = 5·4·15/18 = 50/3; Z = (8 − 1)/sqrt(50/3).
    r = T.monotonic_trend_test([1, 3, 2, 4, 5])
    assert r.n == 5 and r.s == 8
    assert r.var_s == pytest.approx(50 / 3)
    assert r.z == pytest.approx(7 / math.sqrt(50 / 3))
    assert r.p_increasing == pytest.approx(stats.norm.sf(7 / math.sqrt(50 / 3)))
    assert r.p_two_sided == pytest.approx(2 * r.p_increasing)
    assert r.tau == pytest.approx(0.8)
    # slopes 2, .5, 1, 1, -1, .5, .667, 2, 1.5, 1 → median 1
    assert r.sen_slope == pytest.approx(1.0)


def test_mann_kendall_hand_computed_with_ties():
    # x = 1 2 2 3: S = 5 (one tied pair); Var(S) = (4·3·13 − 2·1·9)/18 = 138/18;
    # slopes 1, .5, 2/3, 0, .5, 1 → Sen's slope (0.5 + 2/3)/2.
    r = T.monotonic_trend_test([1, 2, 2, 3])
    assert r.s == 5
    assert r.var_s == pytest.approx(138 / 18)
    assert r.z == pytest.approx(4 / math.sqrt(138 / 18))
    assert r.sen_slope == pytest.approx((0.5 + 2 / 3) / 2)
    down = T.monotonic_trend_test([3, 2, 2, 1])
    assert down.s == -5 and down.z == pytest.approx(-r.z) and down.p_increasing > 0.9


def test_mann_kendall_relates_to_kendalltau_without_ties():
    rng = np.random.default_rng(10)
    x = 0.02 * np.arange(22) + rng.normal(scale=0.05, size=22)  # 22 cycles, a weak upward trend
    r = T.monotonic_trend_test(x)
    tau = stats.kendalltau(np.arange(22), x).statistic
    assert r.s == round(tau * 22 * 21 / 2)
    assert r.tau == pytest.approx(tau)
    assert r.p_increasing < 0.01
    assert r.sen_slope == pytest.approx(stats.theilslopes(x).slope)


def test_mann_kendall_times_nan_and_errors():
    r = T.monotonic_trend_test([0.1, np.nan, 0.3, 0.4], times=[0, 1, 2, 4])
    assert r.n == 3 and r.s == 3
    assert r.sen_slope == pytest.approx(np.median([0.1, 0.075, 0.05]))
    flat = T.monotonic_trend_test([0.5] * 6)
    assert flat.s == 0 and flat.z == 0.0 and flat.p_two_sided == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        T.monotonic_trend_test([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        T.monotonic_trend_test([1, 2, 3], times=[0, 2, 1])


def test_mean_ci_matches_t_interval():
    x = np.array([0.41, 0.47, 0.39, 0.52, 0.45, np.nan])
    r = T.mean_ci(x, ci=0.9)
    v = x[:-1]
    lo, hi = stats.t.interval(0.9, df=4, loc=v.mean(), scale=stats.sem(v))
    assert r.n == 5 and r.mean == pytest.approx(v.mean())
    assert (r.low, r.high) == pytest.approx((lo, hi))
    one = T.mean_ci([0.3])
    assert one.mean == 0.3 and math.isnan(one.low)
    with pytest.raises(ValueError, match="no non-NaN"):
        T.mean_ci([np.nan])


# ---------------------------------------------------------------------------
# Theorem 3: elite mass
# ---------------------------------------------------------------------------


def test_ce_elite_bound_values():
    assert T.ce_elite_bound(0.2, 0) == 0.0
    assert T.ce_elite_bound(0.2, 1) == pytest.approx(0.2)
    np.testing.assert_allclose(T.ce_elite_bound(0.2, [0, 1, 2, 3, 10]), [0, 0.2, 0.36, 0.488, 1 - 0.8**10])
    assert isinstance(T.ce_elite_bound(0.5, 2), float) and T.ce_elite_bound(0.5, 2) == 0.75
    np.testing.assert_allclose(T.ce_elite_bound(1.0, [0, 1, 5]), [0, 1, 1])
    assert T.ce_elite_bound(0.0, 100) == 0.0
    assert T.ce_elite_bound(1e-12, 3) == pytest.approx(3e-12, rel=1e-9)  # no cancellation
    with pytest.raises(ValueError, match="rho0"):
        T.ce_elite_bound(1.5, 1)
    with pytest.raises(ValueError, match="t"):
        T.ce_elite_bound(0.5, -1)


def test_elite_mass_counts_invalid_generations_as_outside():
    q = [np.array([0.3, 0.5, np.nan]), np.array([0.6, 0.7, 0.2]), np.array([])]
    mass = T.elite_mass(q, gamma_star=0.5, n_generated_per_cycle=[10, 5, 4])
    np.testing.assert_allclose(mass, [1 / 10, 2 / 5, 0.0])
    chk = T.elite_bound_check(q, 0.5, [10, 5, 4])
    assert chk.rho0 == pytest.approx(0.1)
    np.testing.assert_allclose(chk.bound, [0, 0.1, 0.19])
    assert chk.holds.tolist() == [True, True, False]
    lo, hi = T.wilson_interval([1, 2, 0], [10, 5, 4])
    np.testing.assert_allclose(chk.low, lo)
    np.testing.assert_allclose(chk.high, hi)
    assert chk.holds_within_ci.tolist() == [True, True, True]  # upper Wilson limit of 0/4 is 0.49
    with pytest.raises(ValueError, match="only 2 generations"):
        T.elite_mass([np.array([0.1, 0.2, 0.3])], 0.5, [2])
    with pytest.raises(ValueError, match="one count per cycle"):
        T.elite_mass(q, 0.5, [10, 5])


# ---------------------------------------------------------------------------
# Corollary 6: Markov token-error model
# ---------------------------------------------------------------------------


def test_markov_calibration_round_trip_with_paper_numbers():
    r_full, n_full = 0.506, 900.0
    eps = T.calibrate_token_error(r_full, n_full)
    assert 0 < eps < 1e-3
    assert T.markov_valid_rate(n_full, eps) == pytest.approx(r_full, rel=1e-12)
    np.testing.assert_allclose(T.markov_valid_rate([n_full, 2 * n_full], eps), [r_full, r_full**2])
    # Deltas of a third of the tokens: r_δ = 0.506^(1/3), ratio = 0.506^(−2/3).
    assert T.predict_delta_rate(r_full, n_full, 300.0) == pytest.approx(r_full ** (1 / 3))
    assert T.predict_delta_ratio(r_full, n_full, 300.0) == pytest.approx(r_full ** (-2 / 3))
    assert T.predict_delta_ratio(r_full, n_full, 300.0) == pytest.approx(
        T.markov_valid_rate(300.0, eps) / r_full
    )
    # Corollary 6: ratio > 1 exactly when deltas are shorter; never above 1/r_full.
    ratios = T.predict_delta_ratio(r_full, n_full, np.array([1e-6, 100, 899, 900, 1200]))
    assert np.all(ratios[:3] > 1) and ratios[3] == pytest.approx(1.0) and ratios[4] < 1
    assert np.all(ratios < 1 / r_full)
    # The paper's "calibrated 2.23" exceeds the model's ceiling 1/0.506 ≈ 1.98: no n̄_δ yields it.
    assert 2.23 * r_full > 1
    with pytest.raises(ValueError, match="ratio"):
        T.implied_length_ratio(r_full, 2.23)
    # The measured 1.41 corresponds to deltas half as long as full programs.
    x = T.implied_length_ratio(r_full, 0.713 / 0.506)
    assert x == pytest.approx(0.5, abs=0.01)
    assert T.predict_delta_rate(r_full, n_full, x * n_full) == pytest.approx(0.713)


def test_markov_input_validation():
    for bad in (0.0, 1.5, -0.2, np.nan):
        with pytest.raises(ValueError, match="r_full"):
            T.calibrate_token_error(bad, 100)
    with pytest.raises(ValueError, match="n_full"):
        T.calibrate_token_error(0.5, 0)
    with pytest.raises(ValueError, match="n_delta"):
        T.predict_delta_ratio(0.5, 100, -3)
    with pytest.raises(ValueError, match="eps"):
        T.markov_valid_rate(10, 1.0)
    with pytest.raises(ValueError, match="n"):
        T.markov_valid_rate(0, 0.1)
    assert T.calibrate_token_error(1.0, 50) == 0.0


# ---------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------


def test_wilson_interval_hand_values():
    # 0/10: upper = z²/(n + z²) = 1.95996²/(10 + 1.95996²) = 0.27753.
    lo, hi = T.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277533, abs=1e-6)
    lo, hi = T.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    # statsmodels' proportion_confint(method="wilson") formula, written out, at 90 %.
    k, n, z = 43, 85, stats.norm.ppf(0.95)
    p = k / n
    c = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    h = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert T.wilson_interval(k, n, ci=0.9) == pytest.approx((c - h, c + h), rel=1e-12)
    lo, hi = T.wilson_interval(np.array([0, 43, 85]), 85)
    assert lo.shape == (3,) and hi[2] == 1.0 and np.all(lo <= hi)
    with pytest.raises(ValueError, match="exceeds"):
        T.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n"):
        T.wilson_interval(0, 0)


def test_rate_ratio_ci_and_sample_size():
    ratio, lo, hi = T.rate_ratio_ci(61, 85, 43, 85)
    assert ratio == pytest.approx(61 / 43)
    se = math.sqrt(1 / 61 - 1 / 85 + 1 / 43 - 1 / 85)
    assert (lo, hi) == pytest.approx((ratio * math.exp(-1.959964 * se), ratio * math.exp(1.959964 * se)))
    assert lo > 1  # 85 per mode tells 0.71 from 0.51
    # Pooled formula for 0.713 vs 0.506: [1.96·sqrt(2·.6095·.3905) + 0.8416·sqrt(.2046+.2499)]² / .207² ≈ 86.3
    assert T.two_proportion_sample_size(0.713, 0.506) == 87
    assert T.two_proportion_sample_size(0.713, 0.506, power=0.9) > 87
    with pytest.raises(ValueError, match="equal rates"):
        T.two_proportion_sample_size(0.5, 0.5)


def test_two_proportion_sample_size_power_by_simulation():
    # At the computed n, a two-sided pooled z-test rejects in ≈ 80 % of simulated pairs.
    n = T.two_proportion_sample_size(0.713, 0.506)
    rng = np.random.default_rng(11)
    k1 = rng.binomial(n, 0.713, 20_000)
    k2 = rng.binomial(n, 0.506, 20_000)
    pbar = (k1 + k2) / (2 * n)
    z = (k1 - k2) / n / np.sqrt(pbar * (1 - pbar) * 2 / n)
    power = np.mean(np.abs(z) > 1.959964)
    assert 0.77 < power < 0.85


# ---------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------


def test_import_is_cheap_no_jax_no_scipy_stats():
    import subprocess
    import sys

    code = "import sys, cenas_jax.theory; print('jax' in sys.modules, 'scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_estimate_snr_chunked_bootstrap_equals_one_block(monkeypatch):
    x = _simulate(np.random.default_rng(12), 30, 4, 1.0, 1.0)
    whole = T.estimate_snr(x, n_boot=250, seed=5)
    # estimate_snr reads the block size from its own module (theory.reliability).
    monkeypatch.setattr("cenas_jax.theory.reliability._BOOT_BLOCK_ELEMENTS", 30 * 4 * 7)  # blocks of 7 resamples
    chunked = T.estimate_snr(x, n_boot=250, seed=5)
    assert chunked == whole


def test_mean_ci_of_identical_values_is_the_point():
    from cenas_jax.theory import mean_ci

    r = mean_ci([0.5, 0.5, 0.5])
    assert (r.mean, r.low, r.high, r.sem) == (0.5, 0.5, 0.5, 0.0)
