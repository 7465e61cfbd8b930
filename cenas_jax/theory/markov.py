"""Corollary 6 (delta vs full valid rate): the first-order Markov token-error model, (1 − ε)^n̄.

:func:`markov_valid_rate`, :func:`calibrate_token_error` (ε̂ from a full-code run), :func:`predict_delta_rate`,
:func:`predict_delta_ratio` and :func:`implied_length_ratio`. The rates' intervals are in ``theory.stats``.
"""

from __future__ import annotations

import numpy as np

from cenas_jax.theory._common import _as_float_array, _ret

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
