"""Private helpers shared by the ``cenas_jax.theory`` modules: argument checks, scalar-or-array returns,
scipy.stats on first use, and the percentile bootstrap (draws by ``scipy.stats.bootstrap``).
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np

# Bootstrap replicates are built as (chunk, K, S) blocks; this bounds a block's size.
_BOOT_BLOCK_ELEMENTS = 2_000_000


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
