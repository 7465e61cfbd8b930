"""Retrain the best candidates of a run at a long budget, score them on the test split, rank-correlate with the proxy.

The reference implementation reports that its 1-epoch proxy ranks architectures
like 50 epochs do (Spearman 0.926, DESIGN.md §8). ``retrain`` checks that on a
run of ours:

1. the top ``K`` trained candidates of the run by proxy quality Q (ties: fewer
   parameters, earlier cycle — the report's order; identical sources once);
   ``include_corpus`` adds the seed corpus's programs trained in the run's
   reference phase, which widens the spread of architectures (a top-K alone is
   the "ceiling" regime of result 6, where σ²_arch is small);
2. each is trained from scratch with the run's recipe for ``epochs`` epochs and
   ``seeds`` seeds in the sandbox (``Evaluator(eval_split="test")``) and scored
   on the held-out **test** split;
3. each evaluation is stored in the run store under the budget label
   ``retrain-{epochs}ep`` with split ``test`` (a rerun skips what is stored);
4. Spearman (and Kendall) between the proxy's Q and the long budget's test
   quality (test accuracy / the corpus's median proxy accuracy on the same
   dataset — within one dataset the same ranking as raw test accuracy), with
   percentile-bootstrap CIs from ``cenas_jax.theory``.

The result is printed as a table (``format_result``) and written as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax import theory
from cenas_jax.candidates.backends import make_evaluator
from cenas_jax.candidates.records import Candidate
from cenas_jax.errors import UserError
from cenas_jax.progress import progress_bar
from cenas_jax.rundir import RunDir
from cenas_jax.store import PROXY, RunStore

REFERENCE_SPEARMAN = 0.926  # NNGPT: 1-epoch proxy vs 50 epochs (DESIGN.md §8)
REFERENCE_EPOCHS = (1, 50)


def budget_label(epochs: float) -> str:
    """The store's budget label of a retrain: ``retrain-50ep``, ``retrain-2.5ep``."""
    return f"retrain-{epochs:g}ep"


@dataclasses.dataclass(frozen=True)
class RetrainRow:
    """One retrained candidate: its proxy numbers beside the long budget's test accuracy (fractions)."""

    candidate_id: str
    cycle: int
    mode: str | None
    dataset: str
    proxy_quality: float
    proxy_accuracy: float | None
    params: int | None
    status: str  # "ok" | "error" (the long-budget training)
    test_accuracy: float | None = None
    seed_accuracies: tuple[float, ...] = ()
    test_quality: float | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class RetrainResult:
    run_dir: Path
    epochs: float
    seeds: int
    budget: str
    proxy_epochs: float
    rows: tuple[RetrainRow, ...]
    spearman: theory.CorrelationResult | None
    kendall: theory.CorrelationResult | None
    reference_spearman: float = REFERENCE_SPEARMAN
    note: str | None = None  # why no correlation was computed

    def to_dict(self) -> dict[str, Any]:
        def corr(c: theory.CorrelationResult | None) -> dict[str, Any] | None:
            return None if c is None else {k: _finite(v) for k, v in dataclasses.asdict(c).items()}

        return {
            "run_dir": str(self.run_dir), "epochs": self.epochs, "seeds": self.seeds, "budget": self.budget,
            "split": "test", "proxy_epochs": self.proxy_epochs,
            "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(r).items()}
                     for r in self.rows],
            "spearman": corr(self.spearman), "kendall": corr(self.kendall),
            "reference": {"spearman": self.reference_spearman, "epochs": list(REFERENCE_EPOCHS),
                          "source": "NNGPT (arXiv 2605.04903): 1-epoch proxy vs 50 epochs"},
            "note": self.note,
        }


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def select_top(store: Any, run_id: int, top: int, include_corpus: bool = False) -> list[dict[str, Any]]:
    """The ``top`` trained candidates of a run by proxy Q (report order), identical sources once, + corpus rows."""
    trained = store.trained_candidates(run_id)
    trained.sort(key=lambda c: (-c.quality, c.params or 0, c.candidate.cycle, c.candidate.idx or 0))
    out, seen = [], set()
    for c in trained:
        if c.candidate.source_hash in seen:
            continue
        seen.add(c.candidate.source_hash)
        out.append({**dataclasses.asdict(c.candidate), "proxy_accuracy": c.accuracy, "params": c.params})
        if len(out) >= top:
            break
    if include_corpus:
        proxy = store.latest_evaluations(run_id, PROXY)
        for r in store.candidates(run_id=run_id, cycle=-1):
            e = proxy.get(r["id"])
            if e is None or r["source_hash"] in seen:
                continue
            seen.add(r["source_hash"])
            q = r["quality"]
            out.append({**r, "quality": q, "proxy_accuracy": e.accuracy, "params": e.params})
    return out


def _reference(store: Any, run_id: int) -> dict[str, float]:
    return dict(store.reference_accuracies(run_id))


EvaluatorFactory = Callable[[Any, Any, Any, int], Any]


def _default_evaluator(data_cfg: Any, train_cfg: Any, sandbox_cfg: Any, seed: int) -> Any:
    return make_evaluator(data_cfg, train_cfg, sandbox_cfg, seed=seed, eval_split="test")


def retrain(
    run_dir: str | Path,
    top: int,
    epochs: float,
    seeds: int = 1,
    *,
    include_corpus: bool = False,
    n_boot: int = 1000,
    progress: bool = False,
    evaluator_factory: EvaluatorFactory | None = None,
    echo: Callable[[str], None] = print,
) -> RetrainResult:
    """Retrain the run's top-``top`` candidates for ``epochs`` epochs × ``seeds`` seeds; test-split accuracy; ρ_S."""
    if top < 1:
        raise UserError(f"--top {top}: expected at least 1 candidate")
    if not epochs > 0:
        raise UserError(f"--epochs {epochs}: expected a positive number of epochs")
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: expected at least 1 seed")
    run_dir = Path(run_dir)
    cfg = RunDir(run_dir).load_config()
    if not (run_dir / "store.sqlite").exists():
        raise UserError(f"{run_dir}: no store.sqlite (has the run started?)")
    label = budget_label(epochs)
    train_cfg = dataclasses.replace(cfg.train, epochs=float(epochs), seeds=int(seeds))
    # The long budget takes ~epochs/proxy_epochs × seeds as long as a proxy evaluation: scale the wall-clock limit.
    scale = max(1.0, float(epochs) / max(cfg.train.epochs, 1e-9) * seeds / max(cfg.train.seeds, 1))
    sandbox_cfg = dataclasses.replace(cfg.sandbox, timeout_s=cfg.sandbox.timeout_s * scale,
                                      cpu_time_s=int(max(cfg.sandbox.cpu_time_s, cfg.sandbox.timeout_s * scale * 2)))
    with RunStore(run_dir, create=False) as store:
        run = store.get_run("main")
        if run is None:
            raise UserError(f"{run_dir}: the store holds no run named 'main'")
        rid = run["id"]
        chosen = select_top(store, rid, top, include_corpus)
        if not chosen:
            raise UserError(f"{run_dir}: no trained candidate to retrain (no candidate has a proxy quality yet)")
        refs = _reference(store, rid)
        todo = []
        for r in chosen:
            if store.latest_evaluation(r["id"], label, ok=False, split="test") is None:
                todo.append(Candidate(id=r["id"], source=r["source"], dataset=r["dataset"] or cfg.data.name))
        if todo:
            echo(f"retraining {len(todo)} candidate(s) for {epochs:g} epochs x {seeds} seed(s) "
                 f"(test split; {len(chosen) - len(todo)} already stored)")
            factory = evaluator_factory or _default_evaluator
            ev = factory(cfg.data, train_cfg, sandbox_cfg, cfg.seed)
            try:
                it = ev.evaluate_iter(todo, train=True)
                if progress:
                    it = progress_bar(it, total=len(todo), desc=label, unit="cand", dynamic_ncols=True)
                by_id = {c.id: c for c in todo}
                for rec in it:
                    d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
                    store.add_evaluation(d["candidate_id"], d, budget=label, split="test",
                                         dataset=by_id[d["candidate_id"]].dataset)
            finally:
                if hasattr(ev, "close"):
                    ev.close()
        rows = []
        for r in chosen:
            e = store.latest_evaluation(r["id"], label, ok=False, split="test")
            ds = r["dataset"] or cfg.data.name
            ok = e is not None and e.ok
            acc = e.accuracy if ok else None
            ref = refs.get(ds)
            rows.append(RetrainRow(
                candidate_id=r["id"], cycle=int(r["cycle"]), mode=r["mode"], dataset=ds,
                proxy_quality=float(r["quality"]) if r["quality"] is not None else (
                    float(r["proxy_accuracy"]) / ref if ref else float(r["proxy_accuracy"])),
                proxy_accuracy=r["proxy_accuracy"], params=r["params"], status="ok" if ok else "error",
                test_accuracy=acc, seed_accuracies=tuple(e.seed_accuracies) if ok else (),
                test_quality=(acc / ref if ref else acc) if acc is not None else None,
                error=None if ok else (f"{e.error_kind}: {e.error_message}" if e else "not evaluated"),
            ))
    sp = kd = None
    note = None
    pairs = [(r.proxy_quality, r.test_quality) for r in rows if r.test_quality is not None]
    if len(pairs) < 3:
        note = f"{len(pairs)} candidate(s) retrained successfully; a rank correlation needs at least 3"
    else:
        x, y = np.array(pairs).T
        try:
            sp = theory.spearman(x, y, n_boot=n_boot, seed=cfg.seed)
            kd = theory.kendall(x, y, n_boot=n_boot, seed=cfg.seed)
        except ValueError as err:  # all proxy (or all long-budget) scores tied
            note = f"rank correlation undefined: {err}"
    return RetrainResult(run_dir=run_dir, epochs=float(epochs), seeds=int(seeds), budget=label,
                         proxy_epochs=float(cfg.train.epochs), rows=tuple(rows), spearman=sp, kendall=kd, note=note)


def write_json(result: RetrainResult, path: str | Path) -> Path:
    """Write ``result.to_dict()`` as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=False))
    return path


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def format_result(result: RetrainResult) -> str:
    """The table of retrained candidates and the proxy's rank correlation beside the reference's."""
    lines = [f"{'candidate':28s} {'cycle':>5s} {'mode':6s} {'dataset':10s} {'proxy Q':>8s} {'proxy acc':>9s} "
             f"{'test acc':>8s} {'params':>9s}"]
    for r in result.rows:
        acc = _f(r.test_accuracy) if r.status == "ok" else f"{'error':>8s}"
        lines.append(f"{r.candidate_id[:28]:28s} {r.cycle:5d} {(r.mode or '-')[:6]:6s} {r.dataset[:10]:10s} "
                     f"{_f(r.proxy_quality):>8s} {_f(r.proxy_accuracy):>9s} {acc:>8s} "
                     f"{(str(r.params) if r.params is not None else '-'):>9s}")
        if r.status != "ok":
            lines.append(f"    {(r.error or '')[:150]}")
    head = f"proxy ({result.proxy_epochs:g} epoch) vs {result.epochs:g} epochs x {result.seeds} seed(s), test split:"
    if result.spearman is not None:
        s, k = result.spearman, result.kendall
        lines.append(f"{head} Spearman {s.estimate:.3f} [{_f(s.ci_low)}, {_f(s.ci_high)}] (n={s.n}, p={s.p_value:.2g})"
                     + (f", Kendall {k.estimate:.3f} [{_f(k.ci_low)}, {_f(k.ci_high)}]" if k is not None else ""))
    else:
        lines.append(f"{head} no rank correlation ({result.note})")
    lines.append(f"reference (NNGPT, 1 vs 50 epochs): Spearman {result.reference_spearman:.3f}")
    return "\n".join(lines)


__all__ = ["RetrainRow", "RetrainResult", "budget_label", "select_top", "retrain", "write_json", "format_result",
           "REFERENCE_SPEARMAN"]
