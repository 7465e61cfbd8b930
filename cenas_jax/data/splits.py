"""Fixed train / validation / test splits from a seed.

Two cases. A format that ships an official test split keeps it as the test split and carves the
validation split out of its training data. A format that ships one pool is split three ways. The
test indices are drawn first, so that changing ``val_fraction`` never moves an example into or out
of the test split. The test split is for final retraining only; the search scores on validation.
"""

from __future__ import annotations

import numpy as np

from cenas_jax.errors import UserError

# Purpose tags mixed into the seed so that the split permutation is independent of any other use of it.
_POOL_TAG = 0x5011
_CARVE_TAG = 0xCA12


def _count(fraction: float, n: int) -> int:
    # A split asked for is never empty (a tiny dataset still gets one example there).
    return max(1, int(round(fraction * n))) if fraction > 0 and n > 2 else int(round(fraction * n))


def pool_split(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of a shuffled split of ``n`` examples; train keeps the shuffled order."""
    perm = np.random.default_rng([seed, _POOL_TAG]).permutation(n)
    n_test = _count(test_fraction, n)
    n_val = _count(val_fraction, n)
    if n - n_test - n_val < 1:
        raise UserError(f"dataset of {n} examples is too small for val_fraction={val_fraction}, test_fraction={test_fraction}")
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def carve_val(n_train: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) carved out of an official training split of ``n_train`` examples."""
    perm = np.random.default_rng([seed, _CARVE_TAG]).permutation(n_train)
    n_val = _count(val_fraction, n_train)
    if n_train - n_val < 1:
        raise UserError(f"training split of {n_train} examples is too small for val_fraction={val_fraction}")
    return perm[n_val:], perm[:n_val]


def shuffle(n: int, seed: int) -> np.ndarray:
    """A seeded permutation (used where a format ships separate train and val splits)."""
    return np.random.default_rng([seed, _CARVE_TAG]).permutation(n)
