"""The cross-entropy loop: prompts → sampling → delta apply → checks → novelty → proxy training → elites → CE update.

One cycle t, in phases (each phase ends with a state write, so a killed run resumes
at the phase it was in; every generation and evaluation is in the store under an id
that is a function of (cycle, slot, attempt), so nothing recorded is lost or redone;
each generation is sampled with a key of its own from (seed, cycle, slot, attempt) and
each batch of them is recorded in one transaction, so a resume samples the same programs):

- ``generate``: N slots; slot i is a delta edit of a parent elite or a full program
  shown one reference elite. Each generation is applied (delta) or extracted (full),
  checked by the sandbox's cheap stages (syntax … budget), and, when valid, put to the
  MinHash novelty filter; a near-duplicate is resampled up to k times with the
  temperature raised. Invalid generations are not resampled: they are the valid rate.
- ``train``: the accepted programs get the proxy training in the sandbox pool.
- ``select``: Q = accuracy normalised by the corpus's accuracy on the same dataset;
  γ_t = the (1-ρ) quantile; S_t = {Q ≥ γ_t} (an empty S_t reuses S_{t-1}).
- ``update``: the CE update on S_t ∪ L (L = the seed corpus, replayed with weight
  ``search.replay_weight`` within a token budget), then a checkpoint of the adapters.

Before cycle 0 a ``reference`` phase trains the corpus on each dataset of the pool
(the normalisation reference and the first parents) and takes the warm start: the CE
update on L alone (θ_0 fitted to the corpus), cached across runs.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cenas_jax.candidates.repair import complete_imports
from cenas_jax.config import RunConfig, to_dict
from cenas_jax.errors import UserError
from cenas_jax.rundir import PHASE_ORDER, LoopState, RunDir, lock_run_dir
from cenas_jax.search import delta as delta_mod
from cenas_jax.search import elites as elites_mod
from cenas_jax.search import prompts as prompts_mod
from cenas_jax.search import update as update_mod
from cenas_jax.search.generator import Generator, Stopwatch
from cenas_jax.search.novelty import NoveltyFilter
from cenas_jax.search.update import WARM_START_RECIPE  # noqa: F401 - re-exported: where it used to live
from cenas_jax.store import CHECK, PROXY, VALID_VERDICTS, CandidateRow, EvalStatus, References, RunStore, Verdict

# Seconds per (training pair x pass) of the warm start with SmolLM2-135M on a 2-core CPU that other work
# shared (the quickstart's 36 pairs x 3 passes took about 9 min); used until this machine has measured its own.
WARM_START_S_PER_PAIR_PASS = 5.0


def warm_start_estimate(cache_dir: Path | None, fingerprint: str, pair_passes: int) -> tuple[float, str]:
    """Expected seconds of a warm start, and what the estimate rests on (this machine's last one, or the default)."""
    rate = None
    if cache_dir is not None:
        try:
            rate = float(json.loads((cache_dir / "timings.json").read_text())[fingerprint])
        except (OSError, ValueError, KeyError, TypeError):
            rate = None
    if rate is not None and rate > 0:
        return rate * pair_passes, "measured on this machine by the last warm start"
    return WARM_START_S_PER_PAIR_PASS * pair_passes, "estimate for a 2-core CPU with the 135M model"


def record_warm_start_time(cache_dir: Path | None, fingerprint: str, pair_passes: int, seconds: float) -> None:
    """Remember this machine's seconds per pair-pass for the next estimate (best effort: a cache, not a record)."""
    if cache_dir is None or pair_passes <= 0:
        return
    path = cache_dir / "timings.json"
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[fingerprint] = seconds / pair_passes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError:
        pass  # a read-only cache only loses the next estimate's accuracy


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


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


def select_corpus(search: Any) -> list[Any]:
    """The seed corpus L of a run: the packaged corpus (or ``search.corpus_dir``), filtered by ``search.corpus``."""
    from cenas_jax.candidates.corpus import CorpusError, load_corpus
    from cenas_jax.errors import UserError

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


class StopRequested(Exception):
    """Raised between units of work when a stop (Ctrl-C, SIGTERM, budget) was asked for."""


# `cenas run`/`resume` exit with this code when a signal (Ctrl-C, SIGTERM: a preemption) stopped the run at a
# checkpoint: the run is resumable, and scripts can tell it from a finished run (0). EX_TEMPFAIL of sysexits.h.
EXIT_INTERRUPTED = 75


@dataclass
class SearchLoop:
    """Runs (or resumes) the CE search in a run directory. Build with ``SearchLoop.open``."""

    rundir: RunDir
    cfg: RunConfig
    generator: Generator
    evaluator: Any  # cenas_jax.candidates.evaluator.Evaluator (or a test double with .evaluate)
    store: RunStore
    run_id: int
    corpus: Sequence[Any]  # CorpusEntry-like: .name, .source
    echo: Callable[[str], None] = print
    progress: bool = True
    warm_cache_dir: Path | None = None
    redo_update: bool = False  # resume: redo the update whose checkpoint is missing or incomplete
    _stop_reason: str | None = None
    _abandon_ok: bool = False  # inside an _abandonable section: a stop raises StopRequested at once
    abandoned_work: bool = False  # a stop abandoned work in flight (device computations may still run)
    stopped_by_signal: bool = False  # set when Ctrl-C or SIGTERM stopped this run (exit EXIT_INTERRUPTED)
    _t_start: float = field(default_factory=time.time)
    _tokens_used: int = 0
    _refs: References | None = None  # the recorded reference accuracies, once read (``_refs_cache``)

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
        old_handlers = self._install_signals()
        try:
            if state.phase == "reference":
                self._phase_reference()
                state = LoopState(cycle=0, phase="generate")
                self.rundir.save_state(state)
            while state.cycle < self.cfg.search.cycles:
                t = state.cycle
                start = PHASE_ORDER.index(state.phase)
                for phase in PHASE_ORDER[start:]:
                    self._check_stop()
                    with Stopwatch() as sw:
                        getattr(self, f"_phase_{phase}")(t)
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
        except StopRequested:
            st = self.rundir.load_state()
            self._mark("interrupted", st)
            self.stopped_by_signal = self._stop_reason == "interrupt" or self._stop_reason.startswith("SIGTERM")
            self.echo(f"stopped ({self._stop_reason}); checkpointed at cycle {st.cycle}, phase {st.phase}; "
                      f"resume with: cenas resume {self.rundir.path}")
        except BaseException as e:
            st = self.rundir.load_state()
            # A full disk is not the run's failure: it stays resumable as it is, once there is space.
            self._mark("interrupted" if _no_space(e) else "failed", st)
            raise
        finally:
            self._restore_signals(old_handlers)
        return summaries

    def _mark(self, status: str, st: LoopState) -> None:
        """Record the run's end state; with no space left that may fail too, and must not hide why it ended."""
        try:
            self.rundir.save_state(LoopState(cycle=st.cycle, phase=st.phase, status=status))
            self.store.set_run_status(self.run_id, status)
        except OSError:
            pass

    def _install_signals(self) -> dict:
        """Ctrl-C and SIGTERM stop the run at the next checkpoint. SIGTERM is how Slurm, Kubernetes and TPU
        preemption say "you have seconds": the work in flight gets ``search.preempt_grace_s``, then it is
        abandoned (SIGALRM raises ``StopRequested``; the phase redoes it on resume). Ctrl-C abandons it at
        once. Only work in an ``_abandonable`` section (sampling, a CE update, evaluations) is abandoned;
        recording and checkpointing (``_finishing``, and everything outside those sections) end first."""

        def on_int(signum: int, frame: Any) -> None:
            if self._stop_reason == "interrupt":  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop_reason = "interrupt"
            if self._abandon_ok:
                self.echo("\nCtrl-C: stopping; the work in flight is dropped (resume redoes it), then checkpointing")
                raise StopRequested(self._stop_reason)
            self.echo("\nCtrl-C: finishing the step in flight, then checkpointing (press again to abort)")

        def on_term(signum: int, frame: Any) -> None:
            if self._stop_reason is not None and self._stop_reason.startswith("SIGTERM"):
                return
            self._stop_reason = "SIGTERM (preemption)"
            grace = self.cfg.search.preempt_grace_s
            self.echo(f"\nSIGTERM: finishing the work in flight for at most {grace:g} s, then checkpointing")
            if grace > 0:
                signal.setitimer(signal.ITIMER_REAL, grace)
            else:
                on_alarm(signal.SIGALRM, frame)

        def on_alarm(signum: int, frame: Any) -> None:
            self._stop_reason = f"SIGTERM (preemption; the work in flight abandoned after {self.cfg.search.preempt_grace_s:g} s)"
            if self._abandon_ok:
                raise StopRequested(self._stop_reason)
            # In a step that must finish (recording, a checkpoint: seconds at most): the next check stops.

        old = {}
        try:
            for sig, fn in ((signal.SIGINT, on_int), (signal.SIGTERM, on_term), (signal.SIGALRM, on_alarm)):
                old[sig] = signal.signal(sig, fn)
        except ValueError:  # not in the main thread
            pass
        return old

    @staticmethod
    def _restore_signals(old: dict) -> None:
        if old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, fn in old.items():
            signal.signal(sig, fn)

    @contextmanager
    def _abandonable(self) -> Iterator[None]:
        """Long work a stop may abandon at once: it is recorded only when it ends, and redone on resume."""
        prev, self._abandon_ok = self._abandon_ok, True
        try:
            self._check_stop()
            yield
        except (StopRequested, KeyboardInterrupt):
            # XLA may still be running what was abandoned (JAX dispatches asynchronously): the CLI then ends
            # the process without the interpreter's finalisation, which crashes under a running computation
            # (measured: SIGSEGV at exit after a Ctrl-C in a real sampling batch or CE update).
            self.abandoned_work = True
            raise
        finally:
            self._abandon_ok = prev

    @contextmanager
    def _finishing(self) -> Iterator[None]:
        """A short step that must end once started (recording a result): a stop waits for it."""
        prev, self._abandon_ok = self._abandon_ok, False
        try:
            yield
        finally:
            self._abandon_ok = prev

    def _check_stop(self) -> None:
        s = self.cfg.search
        if self._stop_reason is None and s.max_wall_s is not None and time.time() - self._t_start > s.max_wall_s:
            self._stop_reason = f"wall-time budget {s.max_wall_s:.0f}s reached"
        if self._stop_reason is None and s.max_tokens is not None and self._tokens_used >= s.max_tokens:
            self._stop_reason = f"token budget {s.max_tokens} reached"
        if self._stop_reason is not None:
            raise StopRequested(self._stop_reason)

    def _restore_from(self, d: Path) -> None:
        """The generator's state from checkpoint ``d``; a damaged one is a ``UserError`` naming it."""
        try:
            self.generator.restore(d)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad file may fail anywhere in a decoder (json, orbax, ...)
            raise UserError(f"the checkpoint {d} is damaged ({type(e).__name__}: {str(e)[:200]}); "
                            f"`cenas resume {self.rundir.path} --redo-update` redoes the update that wrote it "
                            f"(remove its COMPLETE marker first)") from None

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
            self._restore_from(d)
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
            self._restore_from(prev)
        self.echo(f"{d} {what}: redoing {again}" + (f" from {prev.name}" if prev is not None else ""))
        return redo

    # ------------------------------------------------------------------ reference + warm start

    def _datasets(self) -> list[str]:
        pool = [self.cfg.data.name] + [d for d in self.cfg.search.datasets if d != self.cfg.data.name]
        return pool

    def _phase_reference(self) -> None:
        """Train the corpus on every dataset of the pool (normalisation reference), then warm-start."""
        from cenas_jax.candidates.records import Candidate

        todo = []
        for ds in self._datasets():
            for i, entry in enumerate(self.corpus):
                cid = f"L-{ds}-{entry.name}"
                self.store.add_candidate(CandidateRow(id=cid, source=entry.source, run_id=self.run_id, cycle=-1, idx=i,
                                                      mode="corpus", dataset=ds))
                if self.store.latest_evaluation(cid, PROXY, ok=False) is None:
                    todo.append(Candidate(id=cid, source=entry.source, dataset=ds))
        if todo:
            self.echo(f"reference: training the {len(self.corpus)}-program corpus on {', '.join(self._datasets())}")
            self._evaluate_and_store(todo, train=True, budget=PROXY, desc="reference")
        refs = self.store.corpus_reference(self.run_id)
        self.store.set_cycle(self.run_id, -1, reference=dict(refs))
        self._refs = None  # read back from the record from now on
        # The corpus's own Q: the baseline the report and the lineage put beside every candidate.
        for row in self.store.candidates(run_id=self.run_id, cycle=-1):
            ev = self.store.latest_evaluation(row["id"], PROXY)
            if ev is not None and row["quality"] is None and refs.get(row["dataset"]):
                self.store.update_candidate(row["id"], quality=ev.accuracy / refs[row["dataset"]])
        self._warm_start()

    def _warm_start(self) -> None:
        dest = self.rundir.checkpoints / "warm"
        if not self.cfg.search.warm_start or not getattr(self.generator, "learns", True):
            self._save_generator(dest)  # a generator that learns nothing (the mutation control) has no warm start
            return
        examples = self._replay_examples(n=len(self.corpus) * self.cfg.search.warm_start_epochs, seed_offset=0)
        key = update_mod.warm_start_key(examples, model=self.generator.fingerprint, lora=to_dict(self.cfg.llm.lora),
                                        finetune=to_dict(self.cfg.llm.finetune),
                                        passes=self.cfg.search.warm_start_passes,
                                        learning_rate=self.cfg.search.warm_start_learning_rate)
        cache = (self.warm_cache_dir / key) if self.warm_cache_dir else None
        reused = False
        if cache is not None and (cache / "COMPLETE").exists():
            try:
                self._restore_from(cache)
                self.echo(f"warm start: reusing the cached adapter {cache}")
                reused = True
            except UserError as e:  # a cache only: train it again
                self.echo(f"warm start: the cached adapter is unusable ({e}); training it again")
        if not reused:
            passes = self.cfg.search.warm_start_passes or 1
            est, basis = warm_start_estimate(self.warm_cache_dir, self.generator.fingerprint, len(examples) * passes)
            where = f", then cached in {cache} for every later run with the same model, corpus and settings" if cache else ""
            self.echo(f"warm start: CE update on the corpus L ({len(examples)} examples"
                      + (f" x {passes} passes)" if passes > 1 else ")")
                      + f" -- done once{where}; expected about {_minutes(est)} ({basis})")
            t0 = time.time()
            with self._abandonable():
                res = self.generator.update(examples, seed=self.cfg.seed, epochs=passes,
                                            learning_rate=self.cfg.search.warm_start_learning_rate)
            secs = time.time() - t0
            self.echo(f"warm start: done in {_minutes(secs)}")
            self.store.add_finetune_losses(self.run_id, -1, res.losses)
            if cache is not None:
                self._save_generator(cache)
                record_warm_start_time(self.warm_cache_dir, self.generator.fingerprint, len(examples) * passes, secs)
        self._save_generator(dest)

    def _save_generator(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / "COMPLETE"
        if marker.exists():
            marker.unlink()
        self.generator.save(directory)
        marker.write_text(str(time.time()))

    # ------------------------------------------------------------------ generate

    def _slots(self, t: int) -> list[_Slot]:
        """Slot plan of cycle t: modes, datasets, parents/references. A function of (seed, t, store)."""
        s = self.cfg.search
        n = s.candidates_per_cycle
        n_delta = {"full": 0, "delta": n, "mixed": int(round(n * s.delta_share))}[s.mode]
        anchors = self._anchors(t)
        rng = np.random.default_rng([self.cfg.seed, t, 7])
        drawn = elites_mod.draw_parents(anchors, n, rng)
        pool = self._datasets()
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

    def _anchors(self, t: int) -> list[dict[str, Any]]:
        """The elites parents are drawn from: S_{t-1}, or the corpus's top fraction before cycle 0."""
        prev = self.store.elites_before(self.run_id, t)
        rows = [self.store.get_candidate(i) for i in (prev.ids if prev else ())]
        if not rows:
            pool = []
            for row in self.store.candidates(run_id=self.run_id, cycle=-1):
                ev = self.store.latest_evaluation(row["id"], PROXY)
                if ev is not None:
                    pool.append({**row, "quality": self._quality(ev.accuracy, row["dataset"]), "params": ev.params})
            sel = elites_mod.select_elites(self._elite_inputs(pool), rho=self.cfg.search.elite_rho)
            keep = {e.id for e in sel.elites}
            rows = [r for r in pool if r["id"] in keep]
        out = []
        for r in rows:
            ev = self.store.latest_evaluation(r["id"], PROXY)
            acc = ev.accuracy if ev is not None else None
            out.append({"id": r["id"], "source": r["source"], "dataset": r["dataset"], "accuracy": acc,
                        "quality": self._quality(acc, r["dataset"]) if acc is not None else None})
        if not out:
            raise RuntimeError("no parent available: the corpus has no successfully trained program")
        return out

    def _prompt(self, slot: _Slot, anchor: dict[str, Any]) -> Any:
        if slot.mode == "delta":
            return prompts_mod.delta_prompt(anchor["source"], score=anchor["accuracy"], dataset=anchor["dataset"],
                                            edit_format=self.cfg.search.edit_format)
        return prompts_mod.full_prompt(anchor["source"], score=anchor["accuracy"], dataset=slot.dataset,
                                       reference_dataset=anchor["dataset"])

    def _phase_generate(self, t: int) -> None:
        """Fill the cycle's N slots: each is sampled until it holds an accepted program, an invalid one, or a
        near-duplicate at the last attempt (``novelty.max_resamples``, the temperature raised each time).

        Per attempt, over the slots still open, the stages run in order: ``_stage_prompt`` →
        ``_stage_sample`` (each finished batch goes through ``_stage_to_source`` and is recorded in one
        transaction) → ``_stage_check`` (the sandbox's cheap stages) → ``_stage_novelty``. Each stage starts
        from what the one before recorded, so a resumed cycle re-enters anywhere: recorded generations are not
        sampled again (the generator is asked for the same list, those skipped), recorded checks not run again.
        """
        nov = self._novelty_filter(upto_cycle=t)
        slots = self._slots(t)
        anchors = {a["id"]: a for a in self._anchors(t)}
        done: dict[int, str] = {}
        for attempt in range(self.cfg.search.novelty.max_resamples + 1):
            pending = [sl for sl in slots if sl.index not in done]
            if not pending:
                break
            att = _Attempt(cycle=t, attempt=attempt, slots=pending, stored=self._stored_generations(t, attempt))
            if len(att.recorded_positions()) < len(pending):
                self._check_stop()
                self._stage_sample(att, self._stage_prompt(att, anchors), anchors)
            self._stage_check(att)
            done.update(self._stage_novelty(att, nov))

    def _stored_generations(self, t: int, attempt: int) -> dict[int, dict[str, Any]]:
        """Slot index -> the stored generation of cycle ``t``'s attempt ``attempt`` (a resume reuses them)."""
        return {r["idx"]: r for r in self.store.candidates(run_id=self.run_id, cycle=t) if r["attempt"] == attempt}

    def _base_temperature(self, mode: str) -> float:
        """Delta edits may sample cooler (``sampling.temperature_delta``): SEARCH must copy the parent exactly."""
        sampling = self.cfg.llm.sampling
        return sampling.temperature_delta if mode == "delta" and sampling.temperature_delta is not None \
            else sampling.temperature

    def _stage_prompt(self, att: _Attempt, anchors: dict[str, dict[str, Any]]) -> _Requests:
        """Stage 1: each open slot's prompt, temperature (raised per attempt) and generation key."""
        bump = self.cfg.search.novelty.temperature_bump
        return _Requests(
            prompts=[self._prompt(sl, anchors[sl.anchor_id]) for sl in att.slots],
            temperatures=[self._base_temperature(sl.mode) + att.attempt * bump for sl in att.slots],
            seeds=[self._gen_seed(att.cycle, sl.index, att.attempt) for sl in att.slots])

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
            with self._finishing():
                self._record_batch(att, req, anchors, ks, gens)
            self._check_stop()  # Ctrl-C / SIGTERM / a budget: stop after this batch, keeping it

        with Stopwatch() as sw:
            with self._abandonable():
                self.generator.generate(req.prompts, req.temperatures, req.seeds, skip=skip, on_batch=record)
        self.store.add_timing(self.run_id, att.cycle, "sample", sw.seconds)

    def _record_batch(self, att: _Attempt, req: _Requests, anchors: dict[str, dict[str, Any]],
                      ks: list[int], gens: list[Any]) -> None:
        rows, invalid = [], {}
        for k, g in zip(ks, gens):
            self._tokens_used += g.num_tokens
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
        source, err = self._to_source(sl, anchors[sl.anchor_id], g.text)
        row = CandidateRow(
            id=self._cid(att.cycle, sl.index, att.attempt), source=source or "", run_id=self.run_id, cycle=att.cycle,
            idx=sl.index, mode=sl.mode, parent_id=sl.anchor_id if sl.mode == "delta" else None, dataset=sl.dataset,
            prompt=req.prompts[k].user, raw_text=g.text, token_count=g.num_tokens, finish_reason=g.finish_reason,
            attempt=att.attempt, temperature=req.temperatures[k])
        return row, err

    def _stage_check(self, att: _Attempt) -> None:
        """Stage 4: the sandbox's cheap checks (syntax … budget) for the generations without a verdict."""
        from cenas_jax.candidates.records import Candidate

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
        for rec in self._evaluate_and_store(cands, train=False, budget=CHECK, desc=f"check c{att.cycle}") if cands else []:
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

    def _cid(self, t: int, i: int, attempt: int) -> str:
        return f"s{self.cfg.seed}-c{t:03d}-{i:03d}-a{attempt}"

    def _gen_seed(self, t: int, slot: int, attempt: int) -> int:
        """The key of one generation: a function of (run seed, cycle, slot, attempt) only."""
        h = hashlib.sha256(f"{self.cfg.seed}/{t}/{slot}/{attempt}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    def _to_source(self, slot: _Slot, anchor: dict[str, Any], text: str) -> tuple[str | None, str | None]:
        s = self.cfg.search
        if slot.mode == "delta":
            try:
                # Against the parent as the prompt showed it (prompts.clean_program).
                code = delta_mod.apply_edits(prompts_mod.clean_program(anchor["source"]), text, s.edit_format,
                                             fuzzy=s.delta_fuzzy if s.delta_fuzzy > 0 else None)
            except delta_mod.DeltaError as e:
                return None, str(e)
        else:
            code = delta_mod.extract_code(text)
        if s.complete_imports:
            code, _ = complete_imports(code)
        return code, None

    def _novelty_filter(self, upto_cycle: int) -> NoveltyFilter:
        nov = NoveltyFilter(self.cfg.search.novelty)
        for r in self.store.candidates(run_id=self.run_id):
            # The corpus (under its store ids, which delta parents point at) and every program accepted so far.
            if r["cycle"] == -1 or (r["cycle"] is not None and 0 <= r["cycle"] <= upto_cycle and r["verdict"] == Verdict.ACCEPTED):
                nov.add(r["id"], r["source"])
        return nov

    # ------------------------------------------------------------------ train + select

    def _evaluate_and_store(self, cands: Sequence[Any], *, train: bool, budget: str, desc: str) -> list[dict[str, Any]]:
        out = []
        it = self.evaluator.evaluate_iter(cands, train=train)
        if self.progress:
            from cenas_jax.progress import progress_bar

            it = progress_bar(it, total=len(cands), desc=desc, unit="cand", dynamic_ncols=True)
        by_id = {c.id: c for c in cands}
        try:
            with self._abandonable():  # a stop drops the evaluations in flight (the pool retires their workers)
                for rec in it:
                    with self._finishing():
                        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
                        self.store.add_evaluation(d["candidate_id"], d, budget=budget,
                                                  dataset=by_id[d["candidate_id"]].dataset)
                        out.append(d)
                    if self._stop_reason is not None:
                        break  # what was recorded stays; the rest is evaluated on resume
        finally:
            if hasattr(it, "close"):
                it.close()
        self._check_stop()
        return out

    def _phase_train(self, t: int) -> None:
        from cenas_jax.candidates.records import Candidate

        todo = []
        for r in self.store.candidates(run_id=self.run_id, cycle=t):
            if r["verdict"] == Verdict.ACCEPTED and self.store.latest_evaluation(r["id"], PROXY, ok=False) is None:
                todo.append(Candidate(id=r["id"], source=r["source"], dataset=r["dataset"]))
        if todo:
            self._evaluate_and_store(todo, train=True, budget=PROXY, desc=f"train c{t}")
        for r in self.store.candidates(run_id=self.run_id, cycle=t):
            ev = self.store.latest_evaluation(r["id"], PROXY, ok=False)
            if ev is not None and ev.ok and r["quality"] is None:
                self.store.update_candidate(r["id"], quality=self._quality(ev.accuracy, r["dataset"]))
            elif ev is not None and not ev.ok and r["verdict"] == Verdict.ACCEPTED:
                self.store.update_candidate(r["id"], error_kind=ev.error_kind, error_message=ev.error_message)

    def _quality(self, accuracy: float | None, dataset: str) -> float | None:
        if accuracy is None:
            return None
        refs = self._refs_cache()
        return elites_mod.normalize_quality(accuracy, dataset, refs)

    def _refs_cache(self) -> References:
        """The reference accuracies Q is normalised by: the reference phase's record, read once (it never
        changes after the phase; the phase resets the cache when it records it); before the record, computed
        from the corpus's evaluations on every call."""
        if self._refs is not None:
            return self._refs
        refs = self.store.reference_accuracies(self.run_id)
        if refs.recorded:
            self._refs = refs
            return refs
        return self.store.corpus_reference(self.run_id)

    def _elite_inputs(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        return [elites_mod.EliteCandidate(id=r["id"], quality=r["quality"], params=r.get("params") or 0, order=i)
                for i, r in enumerate(rows) if r.get("quality") is not None]

    def _phase_select(self, t: int) -> None:
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
        sel = elites_mod.select_elites(trained, rho=self.cfg.search.elite_rho,
                                       floor=self.cfg.search.elite_floor, previous=prev,
                                       memory=self.cfg.search.elite_memory, max_elites=self.cfg.search.max_elites)
        ids = [e.id for e in sel.elites]
        reused = False
        if not ids:
            ids, reused = prev_ids, True
        self.store.set_cycle(self.run_id, t, gamma=sel.gamma, elites=ids, elites_reused=reused)

    # ------------------------------------------------------------------ CE update

    def _replay_examples(self, n: int, seed_offset: int) -> list[tuple[Any, str]]:
        """n training pairs from the corpus L, in the modes the run samples (``update.replay_pairs``)."""
        s = self.cfg.search
        return update_mod.replay_pairs(self.corpus, n, seed=self.cfg.seed, seed_offset=seed_offset, mode=s.mode,
                                       delta_share=s.delta_share, dataset=self.cfg.data.name,
                                       edit_format=s.edit_format)

    def _elite_inputs_for_update(self, ids: Sequence[str]) -> list[update_mod.EliteInput]:
        """What ``update.elite_pairs`` needs of each elite, read from the store (unknown ids are left out)."""
        out = []
        for cid in ids:
            r = self.store.get_candidate(cid)
            if r is None:
                continue
            parent = self.store.get_candidate(r["parent_id"]) if r["mode"] == "delta" and r["parent_id"] else None
            parent_ev = self.store.latest_evaluation(parent["id"], PROXY) if parent is not None else None
            out.append(update_mod.EliteInput(
                id=r["id"], mode=r["mode"], dataset=r["dataset"], prompt=r["prompt"], source=r["source"],
                parent_source=parent["source"] if parent is not None else None,
                parent_dataset=parent["dataset"] if parent is not None else None,
                parent_accuracy=parent_ev.accuracy if parent_ev is not None else None))
        return out

    def _count_tokens(self) -> update_mod.CountTokens:
        """How the update's token budget counts a pair: the generator's tokenizer (``count_tokens``), or, for a
        generator without one (the scripted double, the mutation control), an estimate from characters."""
        return getattr(self.generator, "count_tokens", None) or update_mod.chars_estimate

    def _phase_update(self, t: int) -> None:
        if not self.cfg.search.ce_update:  # the frozen-LLM control: keep θ_0, still checkpoint the position
            self._save_generator(self.rundir.checkpoints / f"cycle_{t:03d}")
            self.store.set_cycle(self.run_id, t, update={"examples": 0, "steps": 0, "tokens": 0, "seconds": 0.0})
            return
        elites = self.store.cycle_elites(self.run_id, t)
        ids = list(elites.ids) if elites else []
        built = update_mod.elite_pairs(self._elite_inputs_for_update(ids), self.cfg.search.edit_format)
        for f in built.as_full:
            self.echo(f"cycle {t}: elite {f.id}'s edit from its parent cannot be written ({f.reason}); "
                      f"trained as a full program")
        examples = list(built.pairs)
        examples += self._replay_examples(update_mod.replay_count(len(examples), self.cfg.search.replay_weight),
                                          seed_offset=t + 1)
        examples = update_mod.within_budget(examples, self.cfg.search.update_token_budget, self._count_tokens())
        if self.progress and getattr(self.generator, "learns", True):
            self.echo(f"cycle {t}: CE update on {len(examples)} examples ({len(ids)} elites, the rest replayed corpus)")
        with self._abandonable():
            res = self.generator.update(examples, seed=self.cfg.seed * 1000 + t)
        self.store.add_finetune_losses(self.run_id, t, res.losses)
        self._save_generator(self.rundir.checkpoints / f"cycle_{t:03d}")
        self.store.set_cycle(self.run_id, t, update={"examples": len(examples), "steps": res.steps, "tokens": res.tokens,
                                                       "seconds": res.seconds,
                                                       "elites_as_full": [f.id for f in built.as_full]})

    # ------------------------------------------------------------------ summary

    def _summarise(self, t: int) -> CycleSummary:
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
