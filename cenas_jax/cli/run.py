"""`cenas run`, `cenas resume`, `cenas runs`, `cenas export`: the search loop and its run directories."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cenas_jax.cli._distributed import add_distributed_args, join

RUN_HELP = (
    "Run with every process of a multi-host job (one per host; `cenas launch --local-processes N` starts N on "
    "this machine). Process 0 owns the run directory and the store and needs the config or run directory; "
    "the others take the config from it, sample and evaluate their share on their own sandbox workers, and "
    "join the CE update, one FSDP program over all devices. A lost process stops the run at its last "
    "checkpoint (exit 75): resume with `cenas resume RUN_DIR --distributed` on all hosts.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a cross-entropy architecture search from a YAML config",
        description=(
            "Run the CE search: the LLM proposes Flax programs (full or delta edits), the sandbox checks and "
            "trains them, MinHash rejects near-duplicates, the elites fine-tune the LLM. Everything lands in "
            "RUN_DIR/store.sqlite; Ctrl-C finishes the work in flight, checkpoints and exits (resume with "
            "`cenas resume RUN_DIR`). Exit codes: 0 finished (or stopped by a budget: search.max_wall_s / max_tokens); 75 stopped by Ctrl-C or "
            "SIGTERM at a checkpoint (resumable; SIGTERM, a preemption, gives the work in flight "
            "search.preempt_grace_s seconds); 2 a usage or input error; 130 a second Ctrl-C (aborted at once). "
            "One process owns a run directory at a time (a lock in RUN_DIR/.lock): a second run or resume of it "
            "is refused with the owner's pid and host."
        ),
    )
    p.add_argument("config", help="YAML config (e.g. experiments/configs/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.cycles=5 (repeatable)")
    p.add_argument("--run-dir", help="where the run is written (default: run_dir of the config, else runs/<name>-<time>)")
    p.add_argument("--data-dir", help="root holding the on-disk datasets (same as --set data.data_dir=DIR)")
    p.add_argument("--force", action="store_true",
                   help="replace a finished, failed or interrupted run already in the run directory (says what it removes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_distributed_args(p, RUN_HELP)
    p.set_defaults(func=_guarded(cmd_run))

    r = sub.add_parser("resume", help="continue a run that was stopped or killed",
                       description="Continue a run from its last checkpointed phase; nothing recorded is lost or redone. "
                                   "--set changes the stored config first (e.g. fix a dataset name of a run that failed, "
                                   "or raise search.cycles of a finished run); the change is recorded in manifest.json. Exit codes and the "
                                   "run-directory lock as for `cenas run`.")
    r.add_argument("run_dir")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a value of the stored config before resuming (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--redo-update", action="store_true",
                   help="when the adapter checkpoint the run needs is missing or incomplete, redo the CE update that "
                        "wrote it (from the checkpoint before it) instead of stopping with an error")
    add_distributed_args(r, RUN_HELP)
    r.set_defaults(func=_guarded(cmd_resume))

    ls = sub.add_parser("runs", help="list the runs in a directory with their state",
                        description="List the run directories under DIRECTORY (default runs/) with their status, "
                                    "cycle reached, phase and number of recorded candidates.")
    ls.add_argument("directory", nargs="?", default="runs", help="directory holding run directories (default runs)")
    ls.set_defaults(func=cmd_runs)

    ex = sub.add_parser("export", help="write every candidate of a run with scores, lineage and error kind",
                        description="Write one row per candidate of a run, the seed corpus included (mode 'corpus', "
                                    "cycle -1): id, cycle, mode (corpus | full | delta), parent, dataset, verdict, error "
                                    "kind, accuracy, quality, params, FLOPs, degeneracy flags and the program's source.")
    ex.add_argument("run_dir")
    fmt = ex.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv",
                     help="CSV, one row per candidate, the source as a quoted multi-line field (the default)")
    fmt.add_argument("--jsonl", dest="format", action="store_const", const="jsonl",
                     help="JSON lines, one object per candidate")
    ex.add_argument("--out", help="output file (default RUN_DIR/candidates.csv or .jsonl; - for standard output)")
    ex.set_defaults(func=cmd_export)


def _follow(group, progress: bool) -> int:
    """A process other than 0 of a distributed run: the config comes from process 0."""
    import cenas_jax.cli as cli
    from cenas_jax.config import RunConfig, from_dict
    from cenas_jax.distributed.roles import serve

    def build(config: dict):
        cfg = from_dict(RunConfig, config)
        return _components(cfg, progress=False, tag=f"process {group.process_id}: ")

    # Ends with os._exit: JAX's exit hook would disconnect from a coordination service that may be gone
    # (process 0 ends first), which aborts the process.
    cli.HARD_EXIT = True
    return serve(group, build)


def _components(cfg, progress: bool, tag: str = ""):
    """The run's generator and sandbox pool."""
    from cenas_jax.candidates.backends import make_evaluator
    from cenas_jax.search.llm_generator import LLMGenerator

    if cfg.search.generator == "mutation":
        from cenas_jax.search.mutation import MutationGenerator

        gen = MutationGenerator(seed=cfg.seed, edit_format=cfg.search.edit_format)
    else:
        print(f"{tag}loading the LLM {cfg.llm.model.name} ...", flush=True)
        gen = LLMGenerator(cfg.llm, seed=cfg.seed, progress=progress)
    return gen, make_evaluator(cfg.data, cfg.train, cfg.sandbox, seed=cfg.seed)


def _build(cfg, run_dir: Path, new: bool, progress: bool, redo_update: bool = False, group=None):
    from cenas_jax.config import to_dict
    from cenas_jax.rundir import build_manifest
    from cenas_jax.search.loop import SearchLoop, select_corpus

    corpus = select_corpus(cfg.search)
    primary = None
    if group is not None:
        from cenas_jax.distributed.roles import Primary

        primary = Primary(group)
        primary.hello(to_dict(cfg))  # the others load their LLM meanwhile
    gen, evaluator = _components(cfg, progress)
    if primary is not None:
        from cenas_jax.distributed.roles import DistributedEvaluator, DistributedGenerator

        primary.wait_ready(gen.fingerprint)
        print(f"{group.num_processes} processes ready", flush=True)
        gen = DistributedGenerator(gen, primary, on_lost_in_collective=_lost_in_collective(run_dir))
        evaluator = DistributedEvaluator(evaluator, primary)
    from cenas_jax.paths import cache_root

    cache = cache_root() / "warmstart"
    loop = SearchLoop.open(run_dir, cfg if new else None, gen, evaluator, corpus,
                           manifest=build_manifest(cfg, gen.fingerprint) if new else None,
                           progress=progress, warm_cache_dir=cache, redo_update=redo_update)
    return loop, evaluator


def _lost_in_collective(run_dir: Path):
    """Process 0 lost a peer inside a collective step (the CE update): record the run as interrupted at the
    phase it was in (redone on resume) and end the process, which would otherwise wait in it for good."""

    def on_lost(message: str) -> None:
        import os

        from cenas_jax.rundir import LoopState, RunDir
        from cenas_jax.search.loop import EXIT_INTERRUPTED

        rd = RunDir(run_dir)
        try:
            st = rd.load_state()
            rd.save_state(LoopState(cycle=st.cycle, phase=st.phase, status="interrupted"))
        finally:
            print(f"cenas: {message} during a collective step; stopped at cycle {st.cycle}, phase {st.phase} "
                  f"(redone on resume): cenas resume {run_dir} --distributed", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)

    return on_lost


def _drive(loop, evaluator) -> int:
    import cenas_jax.cli as cli
    from cenas_jax.search.loop import EXIT_INTERRUPTED

    primary = getattr(evaluator, "primary", None)  # a distributed run: the others are told when it ends

    try:
        loop.run()
    finally:
        evaluator.close()
        loop.close()
        if primary is not None:
            primary.shutdown("the run " + ("was interrupted" if loop.stopped_by_signal else "ended"),
                             EXIT_INTERRUPTED if loop.stopped_by_signal else 0)
        if loop.abandoned_work:  # everything is recorded and closed; end without finalising a busy XLA
            cli.HARD_EXIT = True
    print(f"run directory: {loop.rundir.path}   report: cenas report {loop.rundir.path}")
    return EXIT_INTERRUPTED if loop.stopped_by_signal else 0


def _stop_during_start_up() -> None:
    """Until the loop installs its own handlers (the LLM may take minutes to load), SIGTERM and Ctrl-C stop at
    once: nothing of this attempt has been recorded yet, and the run directory is as it was."""
    import signal

    def handler(signum, frame):
        raise _StartUpInterrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


class _StartUpInterrupted(Exception):
    pass


def _guarded(fn):
    def run(args):
        from cenas_jax.search.loop import EXIT_INTERRUPTED

        _stop_during_start_up()
        try:
            return fn(args)
        except _StartUpInterrupted as e:
            where = getattr(args, "run_dir", None) or "the run directory"
            print(f"{e} during start-up: nothing was recorded; {where} is as it was", file=sys.stderr)
            return EXIT_INTERRUPTED

    run.__doc__ = fn.__doc__
    return run


def cmd_run(args: argparse.Namespace) -> int:
    group = join(args)
    if group is not None and not group.is_primary:
        return _follow(group, progress=not args.no_progress)
    with _telling_the_others(group):
        return _cmd_run(args, group)


def _telling_the_others(group):
    """Process 0 of a distributed run that fails before its loop runs tells the others why, so they end too."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except BaseException as e:
            if group is not None:
                from cenas_jax.distributed.roles import abort_others

                abort_others(group, f"{type(e).__name__}: {e}")
            raise

    return guard()


def _cmd_run(args: argparse.Namespace, group) -> int:
    from cenas_jax.config import load_config
    from cenas_jax.rundir import RunDir, lock_run_dir
    from cenas_jax.search import preflight

    overrides = list(args.overrides) + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    cfg = load_config(args.config, overrides)
    run_dir = args.run_dir or cfg.run_dir or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Everything that needs no model is checked before the LLM loads (which takes seconds to minutes).
    rd = RunDir(run_dir)
    preflight.check_new_run_dir(rd, args.force)
    preflight.check_inputs(cfg)
    lock_run_dir(rd.path, "cenas run")  # held until this process ends; a second owner is refused
    status = preflight.check_new_run_dir(rd, args.force)  # again, now that no one else can change it
    if status is not None:
        preflight.replace_run_dir(rd, status)
    loop, ev = _build(cfg, Path(run_dir), new=True, progress=not args.no_progress, group=group)
    return _drive(loop, ev)


def cmd_resume(args: argparse.Namespace) -> int:
    group = join(args)
    if group is not None and not group.is_primary:
        return _follow(group, progress=not args.no_progress)
    with _telling_the_others(group):
        return _cmd_resume(args, group)


def _cmd_resume(args: argparse.Namespace, group) -> int:
    from cenas_jax.rundir import LoopState, RunDir, lock_run_dir
    from cenas_jax.search import preflight

    rd = RunDir(args.run_dir)
    rd.load_state()  # a missing or unreadable run directory is an error before anything is created
    lock_run_dir(rd.path, "cenas resume")  # held until this process ends; a second owner is refused
    state = rd.load_state()
    cfg, changes = preflight.resume_overrides(rd, args.overrides)
    if changes:
        preflight.check_resume_changes(state, changes)
    if state.status == "finished" and cfg.search.cycles <= state.cycle:
        print(f"{rd.path}: run already finished ({state.cycle} cycles); nothing to resume. "
              f"`cenas report {rd.path}` writes its report; --set search.cycles=N (N > {state.cycle}) extends it")
        if group is not None:
            from cenas_jax.distributed.roles import abort_others

            abort_others(group, "the run had already finished", code=0)
        return 0
    _check_store(rd, state)  # before anything is written
    preflight.check_inputs(cfg)
    if changes:
        preflight.record_changes(rd, cfg, changes)
        print("config changed: " + ", ".join(f"{c['key']} {c['old']!r} -> {c['new']!r}" for c in changes))
    if state.status == "finished":  # extended: continue at the first cycle not run yet
        state = LoopState(cycle=state.cycle, phase="generate", status="interrupted")
        rd.save_state(state)
    print(f"resuming {rd.path} at cycle {state.cycle}, phase {state.phase} (was {state.status})")
    loop, ev = _build(cfg, rd.path, new=False, progress=not args.no_progress, redo_update=args.redo_update,
                      group=group)
    return _drive(loop, ev)


def _check_store(rd, state) -> None:
    """Before a resume writes anything: the store exists, has its run, and passes SQLite's quick check.

    A run stopped before it recorded anything (still at cycle 0's reference phase) may have no store yet."""
    from cenas_jax.errors import UserError
    from cenas_jax.store import STORE_FILENAME, RunStore

    started = (state.cycle, state.phase) != (0, "reference")  # before that, nothing may be recorded yet
    if not (rd.path / STORE_FILENAME).exists() and not started:
        return
    with RunStore(rd.path, create=not started) as s:
        problem = s.quick_check()
        if problem is not None:
            raise UserError(f"{s.path} is damaged (SQLite quick_check: {problem}); nothing was written. Recover "
                            f"what SQLite can with `sqlite3 {s.path} .recover`, or start the run again")
        if s.get_run("main") is None and started:
            raise UserError(f"{s.path} holds no run: damaged, or not this directory's store; nothing to resume")


def cmd_runs(args: argparse.Namespace) -> int:
    from cenas_jax.errors import UserError
    from cenas_jax.rundir import RunDir, lock_holder

    root = Path(args.directory)
    if not root.is_dir():
        raise UserError(f"no such directory: {root}")
    dirs = sorted(d for d in root.iterdir() if (d / "config.yaml").is_file())
    if not dirs:
        print(f"no runs in {root}")
        return 0
    print(f"{'run':40s} {'status':12s} {'cycle':>9s} {'phase':9s} {'candidates':>10s}")
    damaged: list[tuple[str, str]] = []
    for d in dirs:
        rd = RunDir(d)
        try:
            st = rd.load_state()
            cfg = rd.load_config()
            status, cyc, phase = st.status, f"{st.cycle}/{cfg.search.cycles}", st.phase
            if status == "running" and lock_holder(d) is None:
                status = "interrupted"  # marked running, but no process owns it: killed (kill -9, a lost machine)
        except UserError as e:
            status, cyc, phase = "damaged", "?", str(e).split(" (")[0].split(":")[0][-40:]
            damaged.append((d.name, str(e)))
        n = "?"
        if (d / "store.sqlite").exists():
            from cenas_jax.store import RunStore

            try:
                with RunStore(d, create=False) as s:
                    n = str(sum(1 for r in s.candidates() if (r["cycle"] or 0) >= 0))
            except UserError as e:
                n = "?"
                if status != "damaged":
                    status = "damaged"
                    damaged.append((d.name, str(e)))
        print(f"{d.name:40s} {status:12s} {cyc:>9s} {phase:9s} {n:>10s}")
    for name, why in damaged:
        print(f"{name}: damaged: {why}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import sys

    from cenas_jax.report.export import export_candidates

    fmt = args.format or "csv"
    out = None if args.out == "-" else Path(args.out) if args.out else Path(args.run_dir) / f"candidates.{fmt}"
    n = export_candidates(Path(args.run_dir), out, fmt)
    print(f"wrote {n} candidates to {out or 'standard output'}", file=sys.stderr if out is None else sys.stdout)
    return 0
