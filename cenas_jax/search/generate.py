"""The generate phase of a cycle: prompts → sampling → delta apply → cheap checks → novelty (DESIGN.md §1 steps 1-5).

Cycle t has N slots (``GeneratePhase.slots``): slot i is a delta edit of a parent elite or a full program shown
one reference elite, drawn from S_{t-1} (the corpus's best before cycle 0). Each slot is sampled until it holds
an accepted program, an invalid one, or a near-duplicate at the last attempt (``novelty.max_resamples``, the
temperature raised by ``novelty.temperature_bump`` each time). Invalid generations are not resampled: they are
the valid rate.

Every generation is in the store under an id that is a function of (seed, cycle, slot, attempt)
(``candidate_id``) and is sampled with a key of its own from the same four (``generation_seed``); each batch of
them is recorded in one transaction. Each stage starts from what the store holds, so a resumed cycle samples
the same programs and repeats no check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cenas_jax.candidates.repair import complete_imports
from cenas_jax.config import RunConfig, SamplingConfig, SearchConfig
from cenas_jax.search import delta as delta_mod
from cenas_jax.search import elites as elites_mod
from cenas_jax.search import prompts as prompts_mod
from cenas_jax.search.evaluate import Evaluation, dataset_pool
from cenas_jax.search.generator import Generator, Stopwatch
from cenas_jax.search.novelty import NoveltyFilter
from cenas_jax.search.stopping import StopControl
from cenas_jax.store import CHECK, PROXY, CandidateRow, EvalStatus, RunStore, Verdict


def candidate_id(seed: int, t: int, slot: int, attempt: int) -> str:
    """The store id of one generation: ``s{seed}-c{cycle}-{slot}-a{attempt}``."""
    return f"s{seed}-c{t:03d}-{slot:03d}-a{attempt}"


def generation_seed(seed: int, t: int, slot: int, attempt: int) -> int:
    """The key of one generation: a function of (run seed, cycle, slot, attempt) only."""
    h = hashlib.sha256(f"{seed}/{t}/{slot}/{attempt}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def base_temperature(sampling: SamplingConfig, mode: str) -> float:
    """Delta edits may sample cooler (``sampling.temperature_delta``): SEARCH must copy the parent exactly."""
    return sampling.temperature_delta if mode == "delta" and sampling.temperature_delta is not None \
        else sampling.temperature


def to_source(search: SearchConfig, mode: str, anchor_source: str, text: str) -> tuple[str | None, str | None]:
    """The program of a generation: the edit ``text`` applied to the parent ``anchor_source`` (delta), or the
    program extracted from ``text`` (full), with its missing imports completed (``search.complete_imports``).
    Returns (program, None), or (None, why the edit does not apply)."""
    if mode == "delta":
        try:
            # Against the parent as the prompt showed it (prompts.clean_program).
            code = delta_mod.apply_edits(prompts_mod.clean_program(anchor_source), text, search.edit_format,
                                         fuzzy=search.delta_fuzzy if search.delta_fuzzy > 0 else None)
        except delta_mod.DeltaError as e:
            return None, str(e)
    else:
        code = delta_mod.extract_code(text)
    if search.complete_imports:
        code, _ = complete_imports(code)
    return code, None


@dataclass
class _Slot:
    index: int
    mode: str  # "full" | "delta"
    dataset: str
    anchor_id: str  # the parent (delta) or the reference elite (full)


@dataclass
class _Attempt:
    """One sampling attempt of a cycle over the slots still open. ``stored``: slot index -> the store row of
    the slot's generation in this attempt; the stages fill and refresh it as they record."""

    cycle: int
    attempt: int
    slots: list[_Slot]
    stored: dict[int, dict[str, Any]]

    def recorded_positions(self) -> set[int]:
        """Positions in ``slots`` whose generation is already recorded (a resumed attempt skips them)."""
        return {k for k, sl in enumerate(self.slots) if sl.index in self.stored}


@dataclass(frozen=True)
class _Requests:
    """What the generator is asked for, one entry per open slot of an attempt (in slot order)."""

    prompts: list[Any]
    temperatures: list[float]
    seeds: list[int]


@dataclass
class GeneratePhase:
    """Fills the slots of a cycle with generations, in the store (``run``)."""

    cfg: RunConfig
    store: RunStore
    run_id: int
    generator: Generator
    evaluation: Evaluation  # the cheap checks are stored through it, and it gives the parents' Q
    stop: StopControl
    echo: Callable[[str], None] = print
    progress: bool = True

    def run(self, t: int) -> None:
        """Fill cycle ``t``'s N slots: each is sampled until it holds an accepted program, an invalid one, or a
        near-duplicate at the last attempt (``novelty.max_resamples``, the temperature raised each time).

        Per attempt, over the slots still open, the stages run in order: ``_stage_prompt`` →
        ``_stage_sample`` (each finished batch goes through ``_stage_to_source`` and is recorded in one
        transaction) → ``_stage_check`` (the sandbox's cheap stages) → ``_stage_novelty``. Each stage starts
        from what the one before recorded, so a resumed cycle re-enters anywhere: recorded generations are not
        sampled again (the generator is asked for the same list, those skipped), recorded checks not run again.
        """
        nov = self._novelty_filter(upto_cycle=t)
        slots = self.slots(t)
        anchors = {a["id"]: a for a in self.anchors(t)}
        done: dict[int, str] = {}
        for attempt in range(self.cfg.search.novelty.max_resamples + 1):
            pending = [sl for sl in slots if sl.index not in done]
            if not pending:
                break
            att = _Attempt(cycle=t, attempt=attempt, slots=pending, stored=self._stored_generations(t, attempt))
            if len(att.recorded_positions()) < len(pending):
                self.stop.check()
                self._stage_sample(att, self._stage_prompt(att, anchors), anchors)
            self._stage_check(att)
            done.update(self._stage_novelty(att, nov))

    # ------------------------------------------------------------------ the slot plan

    def slots(self, t: int) -> list[_Slot]:
        """Slot plan of cycle t: modes, datasets, parents/references. A function of (seed, t, store)."""
        s = self.cfg.search
        n = s.candidates_per_cycle
        n_delta = {"full": 0, "delta": n, "mixed": int(round(n * s.delta_share))}[s.mode]
        anchors = self.anchors(t)
        rng = np.random.default_rng([self.cfg.seed, t, 7])
        drawn = elites_mod.draw_parents(anchors, n, rng)
        pool = dataset_pool(self.cfg)
        slots = []
        for i in range(n):
            if i < n_delta:  # a delta candidate is evaluated on its parent's dataset
                a = drawn[i]
                slots.append(_Slot(index=i, mode="delta", dataset=a["dataset"], anchor_id=a["id"]))
            else:  # a full candidate gets a dataset of the pool in turn, and a reference elite from it if any
                ds = pool[(i - n_delta) % len(pool)]
                same = [a for a in anchors if a["dataset"] == ds] or anchors
                a = same[int(rng.integers(len(same)))]
                slots.append(_Slot(index=i, mode="full", dataset=ds, anchor_id=a["id"]))
        return slots

    def anchors(self, t: int) -> list[dict[str, Any]]:
        """The elites parents are drawn from: S_{t-1}, or the corpus's top fraction before cycle 0."""
        prev = self.store.elites_before(self.run_id, t)
        rows = [self.store.get_candidate(i) for i in (prev.ids if prev else ())]
        if not rows:
            pool = []
            for row in self.store.candidates(run_id=self.run_id, cycle=-1):
                ev = self.store.latest_evaluation(row["id"], PROXY)
                if ev is not None:
                    pool.append({**row, "quality": self.evaluation.quality(ev.accuracy, row["dataset"]),
                                 "params": ev.params})
            elite_inputs = [elites_mod.EliteCandidate(id=r["id"], quality=r["quality"], params=r.get("params") or 0,
                                                      order=i)
                            for i, r in enumerate(pool) if r.get("quality") is not None]
            sel = elites_mod.select_elites(elite_inputs, rho=self.cfg.search.elite_rho)
            keep = {e.id for e in sel.elites}
            rows = [r for r in pool if r["id"] in keep]
        out = []
        for r in rows:
            ev = self.store.latest_evaluation(r["id"], PROXY)
            acc = ev.accuracy if ev is not None else None
            out.append({"id": r["id"], "source": r["source"], "dataset": r["dataset"], "accuracy": acc,
                        "quality": self.evaluation.quality(acc, r["dataset"]) if acc is not None else None})
        if not out:
            raise RuntimeError("no parent available: the corpus has no successfully trained program")
        return out

    def _novelty_filter(self, upto_cycle: int) -> NoveltyFilter:
        nov = NoveltyFilter(self.cfg.search.novelty)
        for r in self.store.candidates(run_id=self.run_id):
            # The corpus (under its store ids, which delta parents point at) and every program accepted so far.
            if r["cycle"] == -1 or (r["cycle"] is not None and 0 <= r["cycle"] <= upto_cycle and r["verdict"] == Verdict.ACCEPTED):
                nov.add(r["id"], r["source"])
        return nov

    def _stored_generations(self, t: int, attempt: int) -> dict[int, dict[str, Any]]:
        """Slot index -> the stored generation of cycle ``t``'s attempt ``attempt`` (a resume reuses them)."""
        return {r["idx"]: r for r in self.store.candidates(run_id=self.run_id, cycle=t) if r["attempt"] == attempt}

    # ------------------------------------------------------------------ the stages of an attempt

    def _prompt(self, slot: _Slot, anchor: dict[str, Any]) -> Any:
        if slot.mode == "delta":
            return prompts_mod.delta_prompt(anchor["source"], score=anchor["accuracy"], dataset=anchor["dataset"],
                                            edit_format=self.cfg.search.edit_format)
        return prompts_mod.full_prompt(anchor["source"], score=anchor["accuracy"], dataset=slot.dataset,
                                       reference_dataset=anchor["dataset"])

    def _stage_prompt(self, att: _Attempt, anchors: dict[str, dict[str, Any]]) -> _Requests:
        """Stage 1: each open slot's prompt, temperature (raised per attempt) and generation key."""
        bump = self.cfg.search.novelty.temperature_bump
        return _Requests(
            prompts=[self._prompt(sl, anchors[sl.anchor_id]) for sl in att.slots],
            temperatures=[base_temperature(self.cfg.llm.sampling, sl.mode) + att.attempt * bump for sl in att.slots],
            seeds=[generation_seed(self.cfg.seed, att.cycle, sl.index, att.attempt) for sl in att.slots])

    def _stage_sample(self, att: _Attempt, req: _Requests, anchors: dict[str, dict[str, Any]]) -> None:
        """Stage 2: sample the slots not recorded yet; each finished batch is recorded in one transaction (a kill
        leaves all of it or none), then a stop request is honoured. The sampling itself is abandonable."""
        skip = att.recorded_positions()
        if self.progress:
            what = "resampling" if att.attempt else "sampling"
            shown = "/".join(f"{x:.2f}" for x in sorted({req.temperatures[k] for k in range(len(att.slots)) if k not in skip}))
            self.echo(f"cycle {att.cycle}: {what} {len(att.slots) - len(skip)} completions (temperature {shown})")

        def record(ks: list[int], gens: list[Any]) -> None:
            """One finished batch, recorded in one transaction: a kill leaves all of it or none."""
            with self.stop.finishing():
                self._record_batch(att, req, anchors, ks, gens)
            self.stop.check()  # Ctrl-C / SIGTERM / a budget: stop after this batch, keeping it

        with Stopwatch() as sw:
            with self.stop.abandonable():
                self.generator.generate(req.prompts, req.temperatures, req.seeds, skip=skip, on_batch=record)
        self.store.add_timing(self.run_id, att.cycle, "sample", sw.seconds)

    def _record_batch(self, att: _Attempt, req: _Requests, anchors: dict[str, dict[str, Any]],
                      ks: list[int], gens: list[Any]) -> None:
        rows, invalid = [], {}
        for k, g in zip(ks, gens):
            self.stop.tokens_used += g.num_tokens
            row, err = self._stage_to_source(att, req, anchors, k, g)
            rows.append(row)
            if err is not None:
                invalid[row.id] = ("delta_apply", err)
        self.store.add_candidates(rows, invalid)
        for k, row in zip(ks, rows):
            att.stored[att.slots[k].index] = self.store.get_candidate(row.id)

    def _stage_to_source(self, att: _Attempt, req: _Requests, anchors: dict[str, dict[str, Any]], k: int,
                         g: Any) -> tuple[CandidateRow, str | None]:
        """Stage 3: generation ``g`` of open slot ``k`` as the candidate row to store (the edit applied to the
        parent, or the program extracted), and why it has no program (an edit that does not apply) or None."""
        sl = att.slots[k]
        source, err = to_source(self.cfg.search, sl.mode, anchors[sl.anchor_id]["source"], g.text)
        row = CandidateRow(
            id=candidate_id(self.cfg.seed, att.cycle, sl.index, att.attempt), source=source or "", run_id=self.run_id,
            cycle=att.cycle, idx=sl.index, mode=sl.mode, parent_id=sl.anchor_id if sl.mode == "delta" else None,
            dataset=sl.dataset, prompt=req.prompts[k].user, raw_text=g.text, token_count=g.num_tokens,
            finish_reason=g.finish_reason, attempt=att.attempt, temperature=req.temperatures[k])
        return row, err

    def _stage_check(self, att: _Attempt) -> None:
        """Stage 4: the sandbox's cheap checks (syntax … budget) for the generations without a verdict."""
        from cenas_jax.candidates.records import Candidate  # (JAX, through the worker protocol)

        unchecked = [att.stored[sl.index] for sl in att.slots if att.stored[sl.index]["verdict"] is None]
        if not unchecked:
            return
        # A kill between a check's record and its verdict: the verdict follows from the record, which is
        # never made twice.
        todo = []
        for r in unchecked:
            done_check = self.store.latest_evaluation(r["id"], CHECK, ok=False)
            if done_check is not None:
                self._set_check_verdict(done_check.to_dict())
            else:
                todo.append(r)
        cands = [Candidate(id=r["id"], source=r["source"], dataset=r["dataset"]) for r in todo]
        checked = self.evaluation.evaluate_and_store(cands, train=False, budget=CHECK, desc=f"check c{att.cycle}") \
            if cands else []
        for rec in checked:
            self._set_check_verdict(rec)
        for sl in att.slots:
            att.stored[sl.index] = self.store.get_candidate(att.stored[sl.index]["id"])

    def _set_check_verdict(self, rec: dict[str, Any]) -> None:
        if rec["status"] != EvalStatus.OK:
            self.store.update_candidate(rec["candidate_id"], verdict=Verdict.INVALID, error_kind=rec["error_kind"],
                                        error_message=rec.get("error_message"))
        else:
            self.store.update_candidate(rec["candidate_id"], verdict=Verdict.VALID)

    def _stage_novelty(self, att: _Attempt, nov: NoveltyFilter) -> dict[int, str]:
        """Stage 5: the novelty verdict of the valid generations, in slot order (so two copies in one batch are
        caught too). Returns the slots this attempt settled (accepted or invalid) -> candidate id; a duplicate's
        slot stays open for the next attempt."""
        settled: dict[int, str] = {}
        for sl in att.slots:
            r = att.stored[sl.index]
            if r["verdict"] in (Verdict.INVALID, Verdict.ACCEPTED):
                settled[sl.index] = r["id"]
            elif r["verdict"] == Verdict.VALID:
                if not self.cfg.search.novelty.enabled:
                    self.store.update_candidate(r["id"], verdict=Verdict.ACCEPTED)
                    settled[sl.index] = r["id"]
                    continue
                v = nov.check(r["source"], mode=sl.mode, parent_key=r["parent_id"])
                if v.accepted:
                    nov.accept(r["id"], r["source"])
                    self.store.update_candidate(r["id"], verdict=Verdict.ACCEPTED, nearest_id=v.nearest_key,
                                                similarity=v.similarity)
                    settled[sl.index] = r["id"]
                else:
                    self.store.update_candidate(r["id"], verdict=Verdict.DUPLICATE, error_kind="duplicate",
                                                error_message=f"Jaccard {v.similarity:.3f} to {v.nearest_key}",
                                                nearest_id=v.nearest_key, similarity=v.similarity)
        return settled
