"""Theorem 3 (elite mass): the cross-entropy bound 1 − (1 − ρ_0)^t (:func:`ce_elite_bound`), the measured
elite mass C_t (:func:`elite_mass`) and the two side by side with Wilson CIs (:func:`elite_bound_check`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from cenas_jax.theory._common import _as_float_array, _check_ci, _ret
from cenas_jax.theory.stats import wilson_interval

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
