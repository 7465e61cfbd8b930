"""Proxy reliability (result 6), the experiment: train the architectures, analyse, write the results.

- :func:`run_proxy_snr` trains K architectures × S seeds at the proxy budget
  and × T seeds at a long budget whose seed mean is taken as ground truth,
  analyses the two score matrices (``proxy_snr.analysis``) and writes
  ``proxy_snr.json`` and ``proxy_snr.png`` (``cenas proxy-snr``);
- :func:`ceiling_effect` does the same for a search run's candidates cycle by
  cycle, from the run's stored per-seed scores or by retraining them
  (``ceiling.json``, ``ceiling.png``: :func:`write_ceiling`).

Training goes through a ``ScoreFn`` seam; the default (:func:`evaluator_score_fn`)
is the sandbox, on the backend ``sandbox.backend`` names (this host's pool or Ray
actors), so no candidate code runs in this process. The K x S trainings are
(architecture, seed group) tasks of ``proxy_snr.seeds_per_task`` seeds each
(:func:`seed_groups`): a group trains exactly the numbers its seeds give in one
task of all S, and smaller groups spread one architecture over several workers. The
proxy is keyed by ``RunConfig.seed`` and the ground truth by ``seed + 1``
(``TRUTH_SEED_OFFSET``): the truth runs never share an initialisation with a
proxy run, which would correlate their noise and flatter the proxy
(DESIGN.md §6). The JSON holds the score matrices, so every number can be
recomputed; NaN is written as null and ±inf as "inf"/"-inf".
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.config import DataConfig, RunConfig, SandboxConfig, TrainConfig, to_dict
from cenas_jax.errors import UserError
from cenas_jax.proxy_snr.analysis import (
    MIN_ARCHITECTURES,
    CeilingResult,
    ProxySNRAnalysis,
    analyze,
    ceiling_rows,
    sigma2_arch_trend,
)
from cenas_jax.report.proxy_snr import plot_ceiling, plot_rho_vs_snr

TRUTH_SEED_OFFSET = 1
RESULT_JSON = "proxy_snr.json"
RESULT_PNG = "proxy_snr.png"
CEILING_JSON = "ceiling.json"
CEILING_PNG = "ceiling.png"


# ---------------------------------------------------------------------------
# Training seam
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arch:
    """One architecture to score: an id, its source, its dataset (None: the config's) and cycle (runs only)."""

    id: str
    source: str
    dataset: str | None = None
    cycle: int | None = None


@dataclasses.dataclass(frozen=True)
class ArchScores:
    """Per-seed accuracies in [0, 1] of one architecture at one budget; ``error`` set (and no seeds) on failure."""

    seed_accuracies: tuple[float, ...] = ()
    error: str | None = None


# (architectures, training recipe, key seed) -> one ArchScores per architecture, in order.
ScoreFn = Callable[[Sequence[Arch], TrainConfig, int], list[ArchScores]]


def seed_groups(seeds: int, per_task: int) -> list[tuple[int, int]]:
    """(first seed, number of seeds) of each task that trains seeds ``0 .. seeds - 1`` of one architecture,
    ``per_task`` at a time (0, or ``per_task >= seeds``: one task of all of them)."""
    n = seeds if per_task <= 0 or per_task >= seeds else per_task
    return [(first, min(n, seeds - first)) for first in range(0, seeds, n)]


def evaluator_score_fn(data_cfg: DataConfig, sandbox_cfg: SandboxConfig, progress: bool = False,
                       seeds_per_task: int = 0) -> ScoreFn:  # fmt: skip
    """The default ScoreFn: train through a sandbox pool (``sandbox.backend``; one pool per call), each
    architecture's seeds as tasks of ``seeds_per_task`` seeds (``seed_groups``)."""

    def score(archs: Sequence[Arch], train_cfg: TrainConfig, seed: int) -> list[ArchScores]:
        from cenas_jax.candidates.backends import make_evaluator
        from cenas_jax.candidates.records import Candidate

        groups = seed_groups(train_cfg.seeds, seeds_per_task)
        whole = len(groups) == 1
        tasks = [(i, first, n) for i in range(len(archs)) for first, n in groups]
        cands = [Candidate(archs[i].id if whole else f"{archs[i].id}#seeds{first}-{first + n - 1}", archs[i].source,
                           archs[i].dataset, seed_offset=0 if whole else first, seeds=None if whole else n)
                 for i, first, n in tasks]  # fmt: skip
        with make_evaluator(data_cfg, train_cfg, sandbox_cfg, seed=seed) as ev:
            records = ev.evaluate(cands, train=True, progress=progress)
        if len(records) != len(cands):
            raise RuntimeError(f"the sandbox returned {len(records)} records for {len(cands)} tasks")
        parts: list[list[tuple[int, int, Any]]] = [[] for _ in archs]
        for (i, first, n), r in zip(tasks, records):
            parts[i].append((first, n, r))
        return [_assemble(got, train_cfg.seeds, whole) for got in parts]

    return score


def _assemble(parts: list[tuple[int, int, Any]], seeds: int, whole: bool) -> ArchScores:
    """One architecture's scores from its tasks' (first seed, seeds, record), in seed order; the first failed
    task's error."""
    accs: list[float] = []
    for first, n, r in parts:
        where = "" if whole else f" (seeds {first}..{first + n - 1})"
        if r.status != "ok":
            return ArchScores(error=f"{r.error_kind}: {r.error_message or ''}".strip() + where)
        if len(r.seed_accuracies) != n:
            return ArchScores(error=f"expected {n} seed accuracies, got {len(r.seed_accuracies)}{where}")
        accs += [float(x) for x in r.seed_accuracies]
    if len(accs) != seeds:
        return ArchScores(error=f"expected {seeds} seed accuracies, got {len(accs)}")
    return ArchScores(seed_accuracies=tuple(accs))


def _matrix(scores: Sequence[ArchScores], n_seeds: int) -> np.ndarray:
    """(K, n_seeds) float matrix; a failed architecture's row is NaN."""
    m = np.full((len(scores), n_seeds), np.nan)
    for i, s in enumerate(scores):
        if s.error is None and len(s.seed_accuracies) == n_seeds:
            m[i] = s.seed_accuracies
    return m


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    """Plain JSON: NaN becomes null, ±inf the strings "inf"/"-inf", arrays lists."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        d = {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return d
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def from_json_number(v: Any) -> float:
    """Inverse of the JSON encoding of one number (null -> NaN, "inf" -> inf)."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v)
    return float(v)


def analysis_to_dict(a: ProxySNRAnalysis) -> dict[str, Any]:
    """The analysis as JSON-able data (score matrices included, so every number can be recomputed)."""
    snr = _jsonable(a.snr)
    snr["f_statistic"] = _jsonable(a.snr.f_statistic)
    snr["p_value"] = _jsonable(a.snr.p_value) if a.snr.msw > 0 else None
    return {
        "ids": list(a.ids),
        "proxy_scores": _jsonable(a.proxy),
        "truth_scores": _jsonable(a.truth) if a.truth is not None else None,
        "snr": snr,
        "truth_snr": _jsonable(a.truth_snr) if a.truth_snr is not None else None,
        "comparisons": {c.name: _jsonable(c) for c in a.comparisons},
        "n_boot": a.n_boot,
        "ci": a.ci,
        "bootstrap_seed": a.seed,
    }


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProxySNRResult:
    """What ``cenas proxy-snr`` measured; ``analysis`` covers the architectures that trained at both budgets."""

    analysis: ProxySNRAnalysis
    failures: tuple[dict[str, str], ...]  # {"id", "budget", "error"} of dropped architectures
    source: str  # "corpus" or the run directory the candidates came from
    proxy_epochs: float
    truth_epochs: float
    proxy_seconds: float
    truth_seconds: float
    json_path: Path | None
    png_path: Path | None
    ceiling: CeilingResult | None = None


def select_architectures(cfg: RunConfig) -> tuple[list[Arch], str]:
    """The K architectures of the experiment: corpus entries or a run's trained candidates, capped."""
    p = cfg.proxy_snr
    if p.from_run:
        archs = _run_architectures(Path(p.from_run))
        source = str(p.from_run)
        kind = f"candidates of {p.from_run}"
    else:
        from cenas_jax.candidates.corpus import load_corpus

        archs = [Arch(e.name, e.source) for e in load_corpus()]
        source = "corpus"
        kind = "corpus entries"
    if p.architectures:
        known = {a.id: a for a in archs}
        unknown = [n for n in p.architectures if n not in known]
        if unknown:
            raise UserError(
                f"proxy_snr.architectures: unknown {kind} {unknown}; known: {', '.join(sorted(known)[:40])}"
                + (" ..." if len(known) > 40 else "")
            )
        archs = [known[n] for n in dict.fromkeys(p.architectures)]
    if p.max_architectures and len(archs) > p.max_architectures:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(archs), size=p.max_architectures, replace=False))
        archs = [archs[i] for i in keep]
    if len(archs) < MIN_ARCHITECTURES:
        raise UserError(f"proxy_snr: need at least {MIN_ARCHITECTURES} architectures, got {len(archs)} ({kind})")
    return archs, source


def _open_run(run_dir: Path):
    from cenas_jax.store import RunStore

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory")
    store = RunStore(run_dir, create=False)
    runs = store.runs()
    if not runs:
        store.close()
        raise UserError(f"{run_dir}: the run store holds no run")
    return store, runs[-1]["id"]


def _stored_seed_scores(store, run_id: int) -> dict[str, tuple[float, ...]]:
    """Candidate id -> per-seed accuracies of its latest successful proxy evaluation."""
    from cenas_jax.store import PROXY

    out: dict[str, tuple[float, ...]] = {}
    for cid, e in store.latest_evaluations(run_id, PROXY).items():
        seeds = tuple(float(x) for x in e.seed_accuracies if x is not None)
        out[cid] = seeds if seeds else ((float(e.accuracy),) if e.accuracy is not None else ())
    return out


def _run_architectures(run_dir: Path, with_scores: bool = False):
    store, run_id = _open_run(run_dir)
    try:
        scores = _stored_seed_scores(store, run_id)
        archs = [
            Arch(r["id"], r["source"], r["dataset"], r["cycle"])
            for r in store.candidates(run_id=run_id)
            if r["id"] in scores and scores[r["id"]]
        ]
    finally:
        store.close()
    if with_scores:
        return archs, scores
    return archs


def _proxy_truth_cfgs(cfg: RunConfig) -> tuple[TrainConfig, TrainConfig]:
    p = cfg.proxy_snr
    proxy = dataclasses.replace(cfg.train, epochs=p.proxy_epochs, seeds=p.seeds)
    truth = dataclasses.replace(cfg.train, epochs=p.truth_epochs, seeds=p.truth_seeds)
    return proxy, truth


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def run_proxy_snr(
    cfg: RunConfig,
    out_dir: str | Path | None,
    progress: bool = True,
    score_fn: ScoreFn | None = None,
    archs: Sequence[Arch] | None = None,
) -> ProxySNRResult:
    """Train K architectures × S seeds at the proxy and × T at the long budget; analyse; write JSON + PNG.

    ``cfg.proxy_snr`` says which architectures and budgets (the rest of the
    recipe is ``cfg.train``); ``out_dir`` receives ``proxy_snr.json`` and
    ``proxy_snr.png`` (None: nothing is written). ``score_fn`` defaults to the
    sandbox (``evaluator_score_fn``); ``archs`` overrides the selection (tests).
    """
    p = cfg.proxy_snr
    if archs is None:
        archs, source = select_architectures(cfg)
    else:
        archs, source = list(archs), "given"
    score = score_fn or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress, seeds_per_task=p.seeds_per_task)
    proxy_cfg, truth_cfg = _proxy_truth_cfgs(cfg)

    _say(progress, f"proxy: {len(archs)} architectures x {p.seeds} seeds, {p.proxy_epochs:g} epoch(s) ...")
    t0 = time.perf_counter()
    proxy_scores = score(archs, proxy_cfg, cfg.seed)
    proxy_s = time.perf_counter() - t0
    failures = [
        {"id": a.id, "budget": "proxy", "error": s.error or ""} for a, s in zip(archs, proxy_scores) if s.error is not None
    ]
    ok = [i for i, s in enumerate(proxy_scores) if s.error is None]
    survivors = [archs[i] for i in ok]
    _say(progress, f"  {len(ok)}/{len(archs)} trained in {proxy_s:.0f}s")

    _say(progress, f"truth: {len(survivors)} architectures x {p.truth_seeds} seed(s), {p.truth_epochs:g} epoch(s) ...")
    t0 = time.perf_counter()
    truth_scores = score(survivors, truth_cfg, cfg.seed + TRUTH_SEED_OFFSET) if survivors else []
    truth_s = time.perf_counter() - t0
    failures += [
        {"id": a.id, "budget": "truth", "error": s.error or ""}
        for a, s in zip(survivors, truth_scores)
        if s.error is not None
    ]
    _say(progress, f"  {sum(s.error is None for s in truth_scores)}/{len(survivors)} trained in {truth_s:.0f}s")

    pm = _matrix([proxy_scores[i] for i in ok], p.seeds)
    tm = _matrix(truth_scores, p.truth_seeds)
    keep = np.all(np.isfinite(pm), axis=1) & np.all(np.isfinite(tm), axis=1) if survivors else np.zeros(0, bool)
    if int(keep.sum()) < MIN_ARCHITECTURES:
        detail = "; ".join(f"{f['id']} ({f['budget']}): {f['error'][:120]}" for f in failures[:6])
        raise UserError(
            f"proxy-snr: only {int(keep.sum())} architectures trained at both budgets, need {MIN_ARCHITECTURES}"
            + (f"; failures: {detail}" if detail else "")
        )
    ids = [a.id for a, k in zip(survivors, keep) if k]
    analysis = analyze(ids, pm[keep], tm[keep], n_boot=p.n_boot, ci=p.ci, seed=cfg.seed)

    json_path = png_path = None
    result = ProxySNRResult(
        analysis=analysis,
        failures=tuple(failures),
        source=source,
        proxy_epochs=p.proxy_epochs,
        truth_epochs=p.truth_epochs,
        proxy_seconds=proxy_s,
        truth_seconds=truth_s,
        json_path=None,
        png_path=None,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / RESULT_JSON
        png_path = out / RESULT_PNG
        result = dataclasses.replace(result, json_path=json_path, png_path=png_path)
        write_result_json(result, cfg, json_path)
        plot_rho_vs_snr(analysis, png_path)
    return result


def write_result_json(result: ProxySNRResult, cfg: RunConfig, path: Path) -> None:
    """``proxy_snr.json``: config, budgets, timings, failures and the full analysis."""
    doc = {
        "config": to_dict(cfg),
        "source": result.source,
        "proxy_epochs": result.proxy_epochs,
        "truth_epochs": result.truth_epochs,
        "proxy_seconds": result.proxy_seconds,
        "truth_seconds": result.truth_seconds,
        "failures": list(result.failures),
        "analysis": analysis_to_dict(result.analysis),
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))


# ---------------------------------------------------------------------------
# The ceiling effect: a run's candidates cycle by cycle
# ---------------------------------------------------------------------------


def ceiling_effect(
    run_dir: str | Path,
    cfg: RunConfig,
    score_fn: ScoreFn | None = None,
    with_truth: bool = False,
    progress: bool = True,
) -> CeilingResult:
    """ρ_S of a run's candidates cycle by cycle, as σ²_arch shrinks.

    Uses the run's stored per-seed proxy scores when every trained candidate
    has ≥ 2 of them (truncated to the smallest common S); otherwise retrains
    every trained candidate with ``cfg.proxy_snr.seeds`` seeds at
    ``cfg.proxy_snr.proxy_epochs`` (the rest of the recipe from ``cfg.train``)
    through ``score_fn`` (default: the sandbox). ``with_truth`` also trains the
    long budget and adds the proxy-vs-truth comparisons per cycle. Groups are
    (cycle, dataset), so that datasets of a multi-dataset run do not inflate
    σ²_arch; groups with fewer than 3 candidates get a row with a note.
    """
    run_dir = Path(run_dir)
    p = cfg.proxy_snr
    archs, stored = _run_architectures(run_dir, with_scores=True)
    if not archs:
        raise UserError(f"{run_dir}: no successfully trained candidate in the run store")
    score = score_fn
    failures: list[dict[str, str]] = []
    counts = [len(stored[a.id]) for a in archs]
    proxy_cfg, truth_cfg = _proxy_truth_cfgs(cfg)
    if min(counts) >= 2:
        S = min(counts)
        proxy = {a.id: np.array(stored[a.id][:S]) for a in archs}
        scores_from = "stored"
        _say(progress, f"ceiling: {len(archs)} candidates with {S} stored proxy seeds each")
    else:
        score = score or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress, seeds_per_task=p.seeds_per_task)
        S = p.seeds
        _say(progress, f"ceiling: the run stored {min(counts)} seed(s) per candidate; retraining {len(archs)} x {S} seeds")
        res = score(archs, proxy_cfg, cfg.seed)
        proxy = {a.id: np.array(r.seed_accuracies) for a, r in zip(archs, res) if r.error is None}
        failures += [{"id": a.id, "budget": "proxy", "error": r.error or ""} for a, r in zip(archs, res) if r.error]
        scores_from = "retrained"
    truth: dict[str, np.ndarray] = {}
    if with_truth:
        score = score or evaluator_score_fn(cfg.data, cfg.sandbox, progress=progress, seeds_per_task=p.seeds_per_task)
        todo = [a for a in archs if a.id in proxy]
        _say(progress, f"ceiling: truth budget for {len(todo)} candidates ({p.truth_epochs:g} epochs)")
        res = score(todo, truth_cfg, cfg.seed + TRUTH_SEED_OFFSET)
        truth = {a.id: np.array(r.seed_accuracies) for a, r in zip(todo, res) if r.error is None}
        failures += [{"id": a.id, "budget": "truth", "error": r.error or ""} for a, r in zip(todo, res) if r.error]

    groups: dict[tuple[int, str | None], list[str]] = {}
    for a in archs:
        if a.id in proxy and (not with_truth or a.id in truth):
            groups.setdefault((a.cycle if a.cycle is not None else -1, a.dataset), []).append(a.id)
    rows = ceiling_rows(groups, proxy, truth if with_truth else None, n_boot=p.n_boot, ci=p.ci, seed=cfg.seed)
    return CeilingResult(
        run_dir=str(run_dir),
        scores_from=scores_from,
        seeds=S,
        with_truth=with_truth,
        rows=rows,
        sigma2_arch_trend=sigma2_arch_trend(rows),
        failures=tuple(failures),
    )


def ceiling_to_dict(c: CeilingResult) -> dict[str, Any]:
    return {
        "run_dir": c.run_dir,
        "scores_from": c.scores_from,
        "seeds": c.seeds,
        "with_truth": c.with_truth,
        "sigma2_arch_trend": _jsonable(c.sigma2_arch_trend) if c.sigma2_arch_trend is not None else None,
        "failures": list(c.failures),
        "rows": [
            {
                "cycle": r.cycle,
                "dataset": r.dataset,
                "K": r.K,
                "note": r.note,
                "analysis": analysis_to_dict(r.analysis) if r.analysis is not None else None,
            }
            for r in c.rows
        ],
    }


def write_ceiling(c: CeilingResult, out_dir: str | Path) -> tuple[Path, Path | None]:
    """``ceiling.json`` and (when some cycle has an analysis) ``ceiling.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp = out / CEILING_JSON
    jp.write_text(json.dumps(ceiling_to_dict(c), indent=1, allow_nan=False))
    pp = out / CEILING_PNG
    return jp, (pp if plot_ceiling(c, pp) else None)
