"""The sandbox's side of a cycle: evaluations recorded in the store, quality Q, and the elites (DESIGN.md §1, §6).

- ``Evaluation.reference``: the ``reference`` phase before cycle 0 trains the seed corpus on each dataset of the
  pool, records the reference accuracies Q is normalised by, and gives each corpus row its own Q.
- ``Evaluation.train``: the ``train`` phase, the proxy training of the cycle's accepted programs.
- ``Evaluation.select``: the ``select`` phase: γ_t = the (1-ρ) quantile of Q, S_t = {Q ≥ γ_t} (an empty S_t
  reuses S_{t-1}).
- ``Evaluation.evaluate_and_store``: the evaluator's records as they come, each stored at once (the generate
  phase's cheap checks go through it too); a stop drops the evaluations still in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cenas_jax.config import RunConfig
from cenas_jax.search import elites as elites_mod
from cenas_jax.search.stopping import StopControl
from cenas_jax.store import PROXY, CandidateRow, References, RunStore, Verdict


def dataset_pool(cfg: RunConfig) -> list[str]:
    """The datasets a run evaluates on: ``data.name`` first, then ``search.datasets``."""
    return [cfg.data.name] + [d for d in cfg.search.datasets if d != cfg.data.name]


class QualityNorm:
    """Q = accuracy / the reference accuracy of its dataset (``elites.normalize_quality``).

    The reference is the reference phase's record, read once (it never changes after the phase; the phase
    calls ``forget`` when it records it); before the record, it is computed from the corpus's evaluations on
    every call (more of the corpus may still train)."""

    def __init__(self, store: RunStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self._recorded: References | None = None

    def references(self) -> References:
        if self._recorded is not None:
            return self._recorded
        refs = self.store.reference_accuracies(self.run_id)
        if refs.recorded:
            self._recorded = refs
            return refs
        return self.store.corpus_reference(self.run_id)

    def forget(self) -> None:
        """Read the references from the store again (the reference phase just recorded them)."""
        self._recorded = None

    def quality(self, accuracy: float | None, dataset: str) -> float | None:
        if accuracy is None:
            return None
        return elites_mod.normalize_quality(accuracy, dataset, self.references())


@dataclass
class Evaluation:
    """Runs the reference, train and select phases of a run, and stores what the evaluator returns."""

    cfg: RunConfig
    store: RunStore
    run_id: int
    evaluator: Any  # cenas_jax.candidates.evaluator.Evaluator (or a test double with .evaluate_iter)
    corpus: Sequence[Any]  # CorpusEntry-like: .name, .source
    stop: StopControl
    echo: Callable[[str], None] = print
    progress: bool = True
    norm: QualityNorm = field(init=False)

    def __post_init__(self) -> None:
        self.norm = QualityNorm(self.store, self.run_id)

    def quality(self, accuracy: float | None, dataset: str) -> float | None:
        """Q of an accuracy on ``dataset``; None for no accuracy."""
        return self.norm.quality(accuracy, dataset)

    def evaluate_and_store(self, cands: Sequence[Any], *, train: bool, budget: str, desc: str) -> list[dict[str, Any]]:
        """Evaluate ``cands`` (cheap checks, or proxy training with ``train``), storing each record as it comes
        under ``budget``; returns the records. A stop ends it after the record being stored (the rest are
        evaluated on resume), then raises ``StopRequested``."""
        out = []
        it = self.evaluator.evaluate_iter(cands, train=train)
        if self.progress:
            from cenas_jax.progress import progress_bar

            it = progress_bar(it, total=len(cands), desc=desc, unit="cand", dynamic_ncols=True)
        by_id = {c.id: c for c in cands}
        try:
            with self.stop.abandonable():  # a stop drops the evaluations in flight (the pool retires their workers)
                for rec in it:
                    with self.stop.finishing():
                        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
                        self.store.add_evaluation(d["candidate_id"], d, budget=budget,
                                                  dataset=by_id[d["candidate_id"]].dataset)
                        out.append(d)
                    if self.stop.requested:
                        break  # what was recorded stays; the rest is evaluated on resume
        finally:
            if hasattr(it, "close"):
                it.close()
        self.stop.check()
        return out

    # ------------------------------------------------------------------ the phases

    def reference(self) -> None:
        """Train the corpus on every dataset of the pool and record the normalisation reference (the warm start
        follows it, in the update phase's ``UpdatePhase.warm_start``)."""
        from cenas_jax.candidates.records import Candidate  # (JAX, through the worker protocol)

        todo = []
        pool = dataset_pool(self.cfg)
        for ds in pool:
            for i, entry in enumerate(self.corpus):
                cid = f"L-{ds}-{entry.name}"
                self.store.add_candidate(CandidateRow(id=cid, source=entry.source, run_id=self.run_id, cycle=-1, idx=i,
                                                      mode="corpus", dataset=ds))
                if self.store.latest_evaluation(cid, PROXY, ok=False) is None:
                    todo.append(Candidate(id=cid, source=entry.source, dataset=ds))
        if todo:
            self.echo(f"reference: training the {len(self.corpus)}-program corpus on {', '.join(pool)}")
            self.evaluate_and_store(todo, train=True, budget=PROXY, desc="reference")
        refs = self.store.corpus_reference(self.run_id)
        self.store.set_cycle(self.run_id, -1, reference=dict(refs))
        self.norm.forget()  # read back from the record from now on
        # The corpus's own Q: the baseline the report and the lineage put beside every candidate.
        for row in self.store.candidates(run_id=self.run_id, cycle=-1):
            ev = self.store.latest_evaluation(row["id"], PROXY)
            if ev is not None and row["quality"] is None and refs.get(row["dataset"]):
                self.store.update_candidate(row["id"], quality=ev.accuracy / refs[row["dataset"]])

    def train(self, t: int) -> None:
        """Proxy-train cycle ``t``'s accepted programs not trained yet, then store each one's Q (or its error)."""
        from cenas_jax.candidates.records import Candidate  # (JAX, through the worker protocol)

        todo = []
        for r in self.store.candidates(run_id=self.run_id, cycle=t):
            if r["verdict"] == Verdict.ACCEPTED and self.store.latest_evaluation(r["id"], PROXY, ok=False) is None:
                todo.append(Candidate(id=r["id"], source=r["source"], dataset=r["dataset"]))
        if todo:
            self.evaluate_and_store(todo, train=True, budget=PROXY, desc=f"train c{t}")
        for r in self.store.candidates(run_id=self.run_id, cycle=t):
            ev = self.store.latest_evaluation(r["id"], PROXY, ok=False)
            if ev is not None and ev.ok and r["quality"] is None:
                self.store.update_candidate(r["id"], quality=self.quality(ev.accuracy, r["dataset"]))
            elif ev is not None and not ev.ok and r["verdict"] == Verdict.ACCEPTED:
                self.store.update_candidate(r["id"], error_kind=ev.error_kind, error_message=ev.error_message)

    def select(self, t: int) -> None:
        """The CE rule over cycle ``t``'s trained candidates (``elites.select_elites``, S_{t-1} given as the
        previous elites); records γ_t and the elites S_t (S_{t-1} again when S_t is empty)."""
        trained = [elites_mod.EliteCandidate(id=c.id, quality=c.quality, params=c.params or 0, order=i)
                   for i, c in enumerate(self.store.trained_candidates(self.run_id, t))]
        before = self.store.elites_before(self.run_id, t)
        prev_ids = list(before.ids) if before else []
        prev_rows = []
        for pid in prev_ids:
            r = self.store.get_candidate(pid)
            if r is not None and r["quality"] is not None:
                ev = self.store.latest_evaluation(pid, PROXY)
                prev_rows.append((pid, r["quality"], ev.params if ev is not None else 0))
        prev = [elites_mod.EliteCandidate(id=pid, quality=q, params=params, order=-len(prev_rows) + i)
                for i, (pid, q, params) in enumerate(prev_rows)]
        s = self.cfg.search
        sel = elites_mod.select_elites(trained, rho=s.elite_rho, floor=s.elite_floor, previous=prev,
                                       memory=s.elite_memory, max_elites=s.max_elites)
        ids = [e.id for e in sel.elites]
        reused = False
        if not ids:
            ids, reused = prev_ids, True
        self.store.set_cycle(self.run_id, t, gamma=sel.gamma, elites=ids, elites_reused=reused)
