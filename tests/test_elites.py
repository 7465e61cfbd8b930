"""The CE elite rule, parent draws and per-dataset quality."""

import math

import numpy as np
import pytest

from cenas_jax.search.elites import (
    EliteCandidate,
    draw_parents,
    elite_order,
    normalize_quality,
    reference_accuracy,
    select_elites,
)


def cands(qualities, params=None, trained=None):
    params = params or [1000] * len(qualities)
    trained = trained or [True] * len(qualities)
    return [EliteCandidate(f"c{i}", q, p, i, t) for i, (q, p, t) in enumerate(zip(qualities, params, trained))]


def test_quantile_rule_count_and_gamma():
    qs = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0, 0.05, 0.45]  # N = 12
    sel = select_elites(cands(qs), rho=0.25)
    # (1 - rho)(N - 1) = 8.25 -> 'higher' picks sorted[9] = 0.8: three elites.
    assert sel.gamma == sorted(qs)[9] == 0.8
    assert [e.quality for e in sel.elites] == [1.0, 0.9, 0.8]
    assert sel.num_eligible == 12 and not sel.reused_previous
    assert sel.threshold == sel.gamma
    # The count rule N - ceil((1 - rho)(N - 1)) holds for every N and rho, and matches numpy's 'linear' count.
    rng = np.random.default_rng(0)
    for n in range(1, 30):
        for rho in (0.05, 0.1, 0.25, 0.5, 0.9, 1.0):
            q = rng.permutation(n).astype(float)  # distinct
            sel = select_elites(cands(list(q)), rho=rho)
            want = n - math.ceil((1 - rho) * (n - 1) - 1e-12)
            assert len(sel.elites) == want >= 1
            assert np.sum(q >= np.quantile(q, 1 - rho, method="linear")) == want
            assert sel.gamma in q  # an observed quality


def test_rho_one_takes_every_valid_candidate():
    sel = select_elites(cands([0.3, 0.1, 0.2], trained=[True, True, False]), rho=1.0)
    assert sel.gamma == 0.1 and [e.id for e in sel.elites] == ["c0", "c1"]


def test_ties_enter_and_are_ordered_by_params_then_order():
    qs = [0.9, 0.9, 0.5, 0.9, 0.2]
    params = [5000, 100, 10, 100, 1]
    sel = select_elites(cands(qs, params), rho=0.2)
    # gamma = 0.9; all three 0.9s enter although rho * N = 1.
    assert sel.gamma == 0.9
    assert [e.id for e in sel.elites] == ["c1", "c3", "c0"]
    trunc = select_elites(cands(qs, params), rho=0.2, max_elites=2)
    assert [e.id for e in trunc.elites] == ["c1", "c3"]
    # Missing parameter counts sort last among equals.
    order = elite_order([EliteCandidate("a", 1.0, None, 0), EliteCandidate("b", 1.0, 7, 1)])
    assert [c.id for c in order] == ["b", "a"]


def test_invalid_untrained_and_nan_are_ignored():
    cs = cands([0.99, float("nan"), None, 0.4, 0.6], trained=[False, True, True, True, True])
    sel = select_elites(cs, rho=0.5)
    assert sel.num_eligible == 2 and [e.id for e in sel.elites] == ["c4"]


def test_empty_cycle_reuses_previous():
    prev = tuple(cands([0.8, 0.7]))
    sel = select_elites([], rho=0.25, previous=prev)
    assert sel.reused_previous and sel.elites == prev and sel.gamma is None and sel.ids == ("c0", "c1")
    sel = select_elites(cands([None, 0.5], trained=[True, False]), rho=0.25, previous=prev)
    assert sel.reused_previous and sel.elites == prev
    # First cycle, nothing valid, no previous: an empty selection, not an error.
    sel = select_elites([], rho=0.25)
    assert sel.elites == () and sel.reused_previous


def test_floor():
    qs = [0.3, 0.35, 0.5, 0.45]
    sel = select_elites(cands(qs), rho=0.5, floor=0.4)
    assert sel.gamma == 0.45 and sel.threshold == 0.45 and [e.id for e in sel.elites] == ["c2", "c3"]
    sel = select_elites(cands(qs), rho=1.0, floor=0.4)
    assert sel.gamma == 0.3 and sel.threshold == 0.4 and [e.id for e in sel.elites] == ["c2", "c3"]
    prev = tuple(cands([0.9]))
    sel = select_elites(cands(qs), rho=0.5, floor=0.6, previous=prev)
    assert sel.reused_previous and sel.elites == prev and sel.gamma == 0.45 and sel.threshold == 0.6


def test_elite_memory():
    prev = (EliteCandidate("old-a", 0.95, 10, 0), EliteCandidate("old-b", 0.5, 10, 1))
    now = cands([0.6, 0.9, 0.7, 0.8])
    sel = select_elites(now, rho=0.5, previous=prev, memory=True)
    # gamma from this cycle only (0.8); old-a still clears it, old-b does not.
    assert sel.gamma == 0.8
    assert [e.id for e in sel.elites] == ["old-a", "c1", "c3"]
    assert [e.id for e in select_elites(now, rho=0.5, previous=prev).elites] == ["c1", "c3"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rho=0"):
        select_elites(cands([1.0]), rho=0)
    with pytest.raises(ValueError, match="max_elites=0"):
        select_elites(cands([1.0]), rho=0.5, max_elites=0)


def test_draw_parents_uniform_balanced_deterministic():
    elites = ["a", "b", "c"]
    draw = draw_parents(elites, 7, np.random.default_rng(3))
    assert draw == draw_parents(elites, 7, np.random.default_rng(3))
    # Balanced: each pass of 3 uses every elite once.
    assert sorted(draw[:3]) == elites and sorted(draw[3:6]) == elites and draw[6] in elites
    assert draw_parents(elites, 0, np.random.default_rng(0)) == []
    # Uniform: over many seeds the first parent is each elite a third of the time.
    firsts = [draw_parents(elites, 1, np.random.default_rng(s))[0] for s in range(3000)]
    for e in elites:
        assert abs(firsts.count(e) / 3000 - 1 / 3) < 0.03
    with pytest.raises(ValueError, match="no elites"):
        draw_parents([], 2, np.random.default_rng(0))
    # Works on any items (the loop passes dicts).
    rows = [{"id": "x"}, {"id": "y"}]
    assert {r["id"] for r in draw_parents(rows, 2, np.random.default_rng(1))} == {"x", "y"}


def test_normalize_quality():
    ref = {"digits": [0.9, 0.95, 0.5, 0.97, float("nan")], "cifar10": 0.4}
    assert reference_accuracy(ref, "digits") == pytest.approx(np.median([0.9, 0.95, 0.5, 0.97]))
    assert normalize_quality(0.925 * 1.05, "digits", ref) == pytest.approx(1.05)
    assert normalize_quality(0.6, "cifar10", ref) == pytest.approx(1.5)
    with pytest.raises(KeyError, match="dataset 'svhn'.*known: cifar10, digits"):
        normalize_quality(0.5, "svhn", ref)
    with pytest.raises(ValueError, match="must be > 0"):
        normalize_quality(0.5, "x", {"x": [0.0, 0.0]})
    with pytest.raises(ValueError, match="none is a number"):
        normalize_quality(0.5, "x", {"x": [None]})
    # Monotone in accuracy: on one dataset the elites are those of raw accuracy.
    accs = [0.3, 0.9, 0.6, 0.8]
    by_q = select_elites(cands([normalize_quality(a, "digits", ref) for a in accs]), rho=0.5)
    by_acc = select_elites(cands(accs), rho=0.5)
    assert [e.id for e in by_q.elites] == [e.id for e in by_acc.elites]
