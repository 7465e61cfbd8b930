"""Closed forms and estimators behind the paper's six results (numpy + scipy, no JAX).

The paper (arXiv 2605.30103) models iterative LLM-NAS as a parametric
cross-entropy method and proves six results; this package holds the pure
mathematics needed to check them on a run, one module per concern:

- ``stats`` — Theorem 2 (monotone quality): :func:`monotonic_trend_test`
  (Mann–Kendall) and :func:`mean_ci` for the per-cycle mean quality; the
  measured rank correlations :func:`spearman`, :func:`kendall`; binomial rates
  :func:`wilson_interval`, :func:`rate_ratio_ci`, :func:`two_proportion_sample_size`.
- ``elites`` — Theorem 3 (elite mass): :func:`elite_mass`, :func:`ce_elite_bound`,
  :func:`elite_bound_check`.
- ``markov`` — Corollary 6 (delta vs full valid rate, first-order Markov token errors):
  :func:`markov_valid_rate`, :func:`calibrate_token_error`,
  :func:`predict_delta_rate`, :func:`predict_delta_ratio`,
  :func:`implied_length_ratio` (the rates' intervals are in ``stats``).
- ``reliability`` — Result 6 (proxy reliability): :func:`spearman_from_pearson`,
  :func:`pearson_from_snr`, :func:`predicted_spearman_from_snr`,
  :func:`required_snr`, :func:`expected_sample_spearman`, :func:`estimate_snr`
  (the measured side is ``stats``' :func:`spearman` and :func:`kendall`).
- ``_common`` — the private argument checks and the bootstrap they share.

(Result 5, diversity by mean pairwise Jaccard, is ``cenas_jax.programs.mean_pairwise_jaccard``.)

Callers use the package's names (``from cenas_jax import theory; theory.estimate_snr(...)``).
Conventions: vectorised functions take scalars or arrays and return a Python
``float`` for scalar input, an ``ndarray`` otherwise. Bad input raises
``ValueError`` naming the argument. Bootstrap resamples are drawn by
``scipy.stats.bootstrap`` from ``numpy.random.default_rng(seed)``, so the same
seed gives the same CI. Wilson and t intervals and Sen's slope are scipy's too.
Importing this package loads numpy only; scipy.stats is imported on first use.
"""

from __future__ import annotations

from cenas_jax.theory.elites import EliteBoundCheck, ce_elite_bound, elite_bound_check, elite_mass
from cenas_jax.theory.markov import (
    calibrate_token_error,
    implied_length_ratio,
    markov_valid_rate,
    predict_delta_rate,
    predict_delta_ratio,
)
from cenas_jax.theory.reliability import (
    SNREstimate,
    estimate_snr,
    expected_sample_spearman,
    pearson_from_snr,
    predicted_spearman_from_snr,
    required_snr,
    spearman_from_pearson,
)
from cenas_jax.theory.stats import (
    CorrelationResult,
    MannKendallResult,
    MeanCI,
    kendall,
    mean_ci,
    monotonic_trend_test,
    rate_ratio_ci,
    spearman,
    two_proportion_sample_size,
    wilson_interval,
)

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
