"""The cross-entropy loop: prompts → sampling → delta apply → checks → novelty → proxy training → elites → CE update.

``SearchLoop`` drives a run (or its resume) through its cycles. One cycle t, in phases (each phase ends with a
state write, so a killed run resumes at the phase it was in; every generation and evaluation is in the store
under an id that is a function of (cycle, slot, attempt), so nothing recorded is lost or redone; each
generation is sampled with a key of its own from (seed, cycle, slot, attempt) and each batch of them is
recorded in one transaction, so a resume samples the same programs):

- ``generate`` (``generate.GeneratePhase``): N slots; slot i is a delta edit of a parent elite or a full
  program shown one reference elite. Each generation is applied (delta) or extracted (full), checked by the
  sandbox's cheap stages (syntax … budget), and, when valid, put to the MinHash novelty filter; a
  near-duplicate is resampled up to k times with the temperature raised. Invalid generations are not
  resampled: they are the valid rate.
- ``train`` (``evaluate.Evaluation.train``): the accepted programs get the proxy training in the sandbox pool.
- ``select`` (``evaluate.Evaluation.select``): Q = accuracy normalised by the corpus's accuracy on the same
  dataset; γ_t = the (1-ρ) quantile; S_t = {Q ≥ γ_t} (an empty S_t reuses S_{t-1}).
- ``update`` (``ce_update.UpdatePhase``): the CE update on S_t ∪ L (L = the seed corpus, replayed with weight
  ``search.replay_weight`` within a token budget), then a checkpoint of the adapters.

Before cycle 0 a ``reference`` phase trains the corpus on each dataset of the pool (the normalisation reference
and the first parents: ``Evaluation.reference``) and takes the warm start: the CE update on L alone (θ_0
fitted to the corpus), cached across runs (``UpdatePhase.warm_start``).

Ctrl-C, SIGTERM and the budgets stop the run at a checkpoint (``stopping.StopControl``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.config import RunConfig, to_dict
from cenas_jax.errors import UserError
from cenas_jax.rundir import PHASE_ORDER, REFERENCE_CYCLE, LoopState, RunDir, lock_run_dir
from cenas_jax.search.ce_update import UpdatePhase
from cenas_jax.search.evaluate import Evaluation
from cenas_jax.search.generate import GeneratePhase
from cenas_jax.search.generator import Generator, Stopwatch, restore_checkpoint
from cenas_jax.search.stopping import StopControl, StopRequested
from cenas_jax.store import VALID_VERDICTS, RunStore, Verdict


@dataclass(frozen=True)
class CycleSummary:
    """The one-line summary of a cycle (also stored in the cycle's record)."""

    cycle: int
    generated: int
    valid: int
    duplicates: int
    trained: int
    best_quality: float | None
    mean_quality: float | None
    gamma: float | None
    n_elites: int
    seconds: float

    best_so_far: float | None = None  # best Q of every cycle up to this one
    accepted: int = 0  # valid and novel: sent to training (``trained`` counts those that trained without error)

    def line(self, total_cycles: int) -> str:
        """Cycles are numbered from 0, as in the report and the candidate ids: the last is ``total_cycles - 1``."""
        vr = self.valid / self.generated if self.generated else 0.0
        f = lambda x: "  -  " if x is None else f"{x:.3f}"  # noqa: E731 - a one-line local formatter
        return (
            f"cycle {self.cycle} (of 0-{total_cycles - 1})  generated {self.generated}  valid {self.valid} ({vr:.0%})  "
            f"rejected-dup {self.duplicates}  accepted {self.accepted}  trained {self.trained}  "
            f"cycle best Q {f(self.best_quality)}  best Q so far {f(self.best_so_far)}  "
            f"mean Q {f(self.mean_quality)}  gamma {f(self.gamma)}  elites {self.n_elites}  {self.seconds:.0f}s"
        )


def select_corpus(search: Any) -> list[Any]:
    """The seed corpus L of a run: the packaged corpus (or ``search.corpus_dir``), filtered by ``search.corpus``."""
    from cenas_jax.candidates.corpus import CorpusError, load_corpus

    try:
        entries = load_corpus(search.corpus_dir)
    except CorpusError as e:
        raise UserError(f"search.corpus_dir: {e}") from e
    if search.corpus:
        by_name = {e.name: e for e in entries}
        missing = [n for n in search.corpus if n not in by_name]
        if missing:
            raise UserError(f"search.corpus: unknown program(s) {missing}; known: {', '.join(sorted(by_name))}")
        entries = [by_name[n] for n in search.corpus]
    return entries


def _no_space(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == 28:
            return True
        e = e.__cause__ or e.__context__
    return False


# `cenas run`/`resume` exit with this code when a signal (Ctrl-C, SIGTERM: a preemption) stopped the run at a
# checkpoint: the run is resumable, and scripts can tell it from a finished run (0). EX_TEMPFAIL of sysexits.h.
EXIT_INTERRUPTED = 75


@dataclass
class SearchLoop:
    """Runs (or resumes) the CE search in a run directory. Build with ``SearchLoop.open``.

    The phases are run by ``generation`` (generate), ``evaluation`` (reference, train, select) and ``updates``
    (update, the warm start); ``stop`` is the stop state they share (signals, budgets)."""

    rundir: RunDir
    cfg: RunConfig
    generator: Generator
    evaluator: Any  # cenas_jax.candidates.evaluator.Evaluator (or a test double with .evaluate_iter)
    store: RunStore
    run_id: int
    corpus: Sequence[Any]  # CorpusEntry-like: .name, .source
    echo: Callable[[str], None] = print
    progress: bool = True
    warm_cache_dir: Path | None = None
    redo_update: bool = False  # resume: redo the update whose checkpoint is missing or incomplete
    stopped_by_signal: bool = False  # set when Ctrl-C or SIGTERM stopped this run (exit EXIT_INTERRUPTED)
    stop: StopControl = field(init=False)
    evaluation: Evaluation = field(init=False)
    generation: GeneratePhase = field(init=False)
    updates: UpdatePhase = field(init=False)

    def __post_init__(self) -> None:
        self.stop = StopControl(self.cfg.search, self.echo)  # the wall-time budget runs from here
        shared = dict(cfg=self.cfg, store=self.store, run_id=self.run_id, stop=self.stop, echo=self.echo,
                      progress=self.progress)
        self.evaluation = Evaluation(evaluator=self.evaluator, corpus=self.corpus, **shared)
        self.generation = GeneratePhase(generator=self.generator, evaluation=self.evaluation, **shared)
        self.updates = UpdatePhase(generator=self.generator, corpus=self.corpus, checkpoints=self.rundir.checkpoints,
                                   run_dir=self.rundir.path, warm_cache_dir=self.warm_cache_dir, **shared)

    @property
    def abandoned_work(self) -> bool:
        """A stop abandoned work in flight (device computations may still run): the CLI ends without finalising."""
        return self.stop.abandoned_work

    # ------------------------------------------------------------------ set-up

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        cfg: RunConfig | None,
        generator: Generator,
        evaluator: Any,
        corpus: Sequence[Any],
        *,
        manifest: dict[str, Any] | None = None,
        **kw: Any,
    ) -> SearchLoop:
        """Create a new run (``cfg`` given) or reopen an existing one (``cfg`` None: read from the directory).

        Takes the run directory's lock (``rundir.lock_run_dir``) first: a second owner is refused.
        """
        rd = RunDir(run_dir)
        lock = lock_run_dir(rd.path, "cenas run" if cfg is not None else "cenas resume")
        if cfg is not None:
            rd.create(cfg, manifest or {})
        else:
            cfg = rd.load_config()
        # A resume never recreates a lost store, unless the run had recorded nothing yet.
        fresh = cfg is not None or (rd.load_state().cycle, rd.load_state().phase) == (0, "reference")
        store = RunStore(rd.path, create=fresh)
        run = store.get_run("main")
        if run is None and not fresh:
            store.close()
            raise UserError(f"{rd.path}: the run store holds no run: damaged, or replaced; nothing to resume")
        run_id = run["id"] if run else store.create_run("main", to_dict(cfg), manifest or rd.manifest())
        loop = cls(rundir=rd, cfg=cfg, generator=generator, evaluator=evaluator, store=store, run_id=run_id,
                   corpus=list(corpus), **kw)
        loop._lock = lock
        return loop

    def close(self) -> None:
        self.store.close()
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    # ------------------------------------------------------------------ driver

    def run(self) -> list[CycleSummary]:
        """Run until the configured number of cycles, a budget, or a stop request; returns this call's summaries."""
        state = self.rundir.load_state()
        if state.status == "finished":
            self.echo(f"{self.rundir.path}: run already finished ({self.cfg.search.cycles} cycles)")
            return []
        state = self._restore_generator(state)  # before anything is written: a missing adapter is an error
        self.rundir.save_state(LoopState(cycle=state.cycle, phase=state.phase, status="running"))
        summaries: list[CycleSummary] = []
        old_handlers = self.stop.install_signals()
        try:
            if state.phase == "reference":
                with Stopwatch() as sw:
                    self._phase_reference()
                self.store.add_timing(self.run_id, REFERENCE_CYCLE, "reference", sw.seconds)
                state = LoopState(cycle=0, phase="generate")
                self.rundir.save_state(state)
            while state.cycle < self.cfg.search.cycles:
                t = state.cycle
                start = PHASE_ORDER.index(state.phase)
                for phase in PHASE_ORDER[start:]:
                    self.stop.check()
                    with Stopwatch() as sw:
                        self._run_phase(phase, t)
                    self.store.add_timing(self.run_id, t, phase, sw.seconds)
                    nxt = PHASE_ORDER.index(phase) + 1
                    state = LoopState(cycle=t, phase=PHASE_ORDER[nxt]) if nxt < len(PHASE_ORDER) else LoopState(cycle=t + 1, phase="generate")
                    self.rundir.save_state(state)
                summary = self._summarise(t)
                self.store.set_cycle(self.run_id, t, summary=summary.__dict__)
                summaries.append(summary)
                self.echo(summary.line(self.cfg.search.cycles))
            self.rundir.save_state(LoopState(cycle=state.cycle, phase="done", status="finished"))
            self.store.set_run_status(self.run_id, "finished")
        except StopRequested as e:
            st = self.rundir.load_state()
            self._mark("interrupted", st)
            # A lost process of a distributed run (PeerLost) is a stop from outside, like a signal: exit 75.
            self.stopped_by_signal = self.stop.by_signal or e.external
            distributed = " --distributed" if e.external else ""
            self.echo(f"stopped ({self.stop.reason or e}); checkpointed at cycle {st.cycle}, phase {st.phase}; "
                      f"resume with: cenas resume {self.rundir.path}{distributed}")
        except BaseException as e:
            st = self.rundir.load_state()
            # A full disk is not the run's failure: it stays resumable as it is, once there is space.
            self._mark("interrupted" if _no_space(e) else "failed", st)
            raise
        finally:
            self.stop.restore_signals(old_handlers)
        return summaries

    def _mark(self, status: str, st: LoopState) -> None:
        """Record the run's end state; with no space left that may fail too, and must not hide why it ended."""
        try:
            self.rundir.save_state(LoopState(cycle=st.cycle, phase=st.phase, status=status))
            self.store.set_run_status(self.run_id, status)
        except OSError:
            pass

    # ------------------------------------------------------------------ the phases

    def _phase_reference(self) -> None:
        """Before cycle 0: the corpus trained on every dataset of the pool (the normalisation reference and the
        first parents), then the warm start."""
        self.evaluation.reference()
        self.updates.warm_start()

    def _run_phase(self, phase: str, t: int) -> None:
        """Phase ``phase`` (one of ``PHASE_ORDER``) of cycle ``t``."""
        if phase == "generate":
            self.generation.run(t)
        elif phase == "train":
            self.evaluation.train(t)
        elif phase == "select":
            self.evaluation.select(t)
        elif phase == "update":
            self.updates.run(t)
        else:
            raise ValueError(f"unknown phase {phase!r}; the phases of a cycle are {PHASE_ORDER}")

    # ------------------------------------------------------------------ resume: the adapters the position needs

    def _restore_generator(self, state: LoopState) -> LoopState:
        """Load the adapters the loop position implies: after cycle t-1's update, or the warm start.

        A missing or incomplete checkpoint (no COMPLETE marker) is an error: continuing from an older adapter,
        or the base model, would change every later generation without a word. With ``redo_update`` the
        update that wrote it is redone from the checkpoint before it; returns the position to continue from.
        """
        if state.phase == "reference" and state.cycle == 0:
            return state
        t = state.cycle
        name = "warm" if t == 0 else f"cycle_{t - 1:03d}"
        d = self.rundir.checkpoints / name
        if (d / "COMPLETE").exists():
            restore_checkpoint(self.generator, d, self.rundir.path)
            return state
        what = "is missing" if not d.exists() else "is incomplete (no COMPLETE marker: its save was cut short)"
        if t == 0:
            redo, prev, again = LoopState(cycle=0, phase="reference"), None, "the warm start"
        else:
            prev = self.rundir.checkpoints / ("warm" if t == 1 else f"cycle_{t - 2:03d}")
            redo, again = LoopState(cycle=t - 1, phase="update"), f"cycle {t - 1}'s CE update"
        if not self.redo_update:
            raise UserError(f"{d} {what}: the LLM would resume from an older adapter than the run used. "
                            f"`cenas resume {self.rundir.path} --redo-update` redoes {again}"
                            + (f" from {prev.name}" if prev is not None else "") + "; nothing recorded is lost")
        if prev is not None:
            if not (prev / "COMPLETE").exists():
                raise UserError(f"{d} {what}, and so is {prev}: --redo-update rebuilds one adapter from the one "
                                f"before it; the run cannot continue as it was")
            restore_checkpoint(self.generator, prev, self.rundir.path)
        self.echo(f"{d} {what}: redoing {again}" + (f" from {prev.name}" if prev is not None else ""))
        return redo

    # ------------------------------------------------------------------ summary

    def _summarise(self, t: int) -> CycleSummary:
        """Cycle ``t``'s summary, from the store."""
        rows = self.store.candidates(run_id=self.run_id, cycle=t)
        final = {}
        for r in rows:  # the last attempt of each slot is its generation's fate
            if r["idx"] not in final or r["attempt"] > final[r["idx"]]["attempt"]:
                final[r["idx"]] = r
        valid = sum(1 for r in rows if r["verdict"] in VALID_VERDICTS)
        dups = sum(1 for r in rows if r["verdict"] == Verdict.DUPLICATE)
        accepted = sum(1 for r in rows if r["verdict"] == Verdict.ACCEPTED)
        qs = [r["quality"] for r in rows if r["quality"] is not None]
        cyc = {c["cycle"]: c for c in self.store.cycles(self.run_id)}.get(t, {})
        # The phases' wall times ("sample" is part of "generate", not added again).
        secs = sum(v for k, v in self.store.timings(self.run_id).get(t, {}).items() if k in PHASE_ORDER)
        upto = [r["quality"] for c in range(t + 1) for r in self.store.candidates(run_id=self.run_id, cycle=c)
                if r["quality"] is not None]
        return CycleSummary(cycle=t, generated=len(rows), valid=valid, duplicates=dups, trained=len(qs),
                            best_quality=max(qs) if qs else None, mean_quality=float(np.mean(qs)) if qs else None,
                            gamma=cyc.get("gamma"), n_elites=len(cyc.get("elites") or []), seconds=secs,
                            best_so_far=max(upto) if upto else None, accepted=accepted)
