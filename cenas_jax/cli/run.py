"""`cenas run`, `cenas resume`, `cenas runs`, `cenas export`: the search loop and its run directories."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a cross-entropy architecture search from a YAML config",
        description=(
            "Run the CE search: the LLM proposes Flax programs (full or delta edits), the sandbox checks and "
            "trains them, MinHash rejects near-duplicates, the elites fine-tune the LLM. Everything lands in "
            "RUN_DIR/store.sqlite; Ctrl-C finishes the work in flight, checkpoints and exits (resume with "
            "`cenas resume RUN_DIR`)."
        ),
    )
    p.add_argument("config", help="YAML config (e.g. experiments/configs/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.cycles=5 (repeatable)")
    p.add_argument("--run-dir", help="where the run is written (default: run_dir of the config, else runs/<name>-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    r = sub.add_parser("resume", help="continue a run that was stopped or killed",
                       description="Continue a run from its last checkpointed phase; nothing recorded is lost or redone.")
    r.add_argument("run_dir")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_resume)

    ls = sub.add_parser("runs", help="list the runs in a directory with their state")
    ls.add_argument("directory", nargs="?", default="runs")
    ls.set_defaults(func=cmd_runs)

    ex = sub.add_parser("export", help="write every candidate of a run with scores, lineage and error kind")
    ex.add_argument("run_dir")
    ex.add_argument("--csv", action="store_true", help="CSV output (the default and only format for now)")
    ex.add_argument("--out", help="output file (default RUN_DIR/candidates.csv)")
    ex.set_defaults(func=cmd_export)


def _build(cfg, run_dir: Path, new: bool, progress: bool):
    from cenas_jax.candidates.sandbox import Evaluator
    from cenas_jax.search.llm_generator import LLMGenerator
    from cenas_jax.search.loop import SearchLoop, select_corpus
    from cenas_jax.search.rundir import build_manifest

    corpus = select_corpus(cfg.search)
    if cfg.search.generator == "mutation":
        from cenas_jax.search.mutation import MutationGenerator

        gen = MutationGenerator(seed=cfg.seed, edit_format=cfg.search.edit_format)
    else:
        print(f"loading the LLM {cfg.llm.model.name} ...", flush=True)
        gen = LLMGenerator(cfg.llm, seed=cfg.seed, progress=progress)
    evaluator = Evaluator(cfg.data, cfg.train, cfg.sandbox, seed=cfg.seed)
    from cenas_jax.paths import cache_root

    cache = cache_root() / "warmstart"
    loop = SearchLoop.open(run_dir, cfg if new else None, gen, evaluator, corpus,
                           manifest=build_manifest(cfg, gen.fingerprint) if new else None,
                           progress=progress, warm_cache_dir=cache)
    return loop, evaluator


def _drive(loop, evaluator) -> int:
    try:
        loop.run()
    finally:
        evaluator.close()
        loop.close()
    print(f"run directory: {loop.rundir.path}   report: cenas report {loop.rundir.path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cenas_jax.config import load_config

    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or cfg.run_dir or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    loop, ev = _build(cfg, Path(run_dir), new=True, progress=not args.no_progress)
    return _drive(loop, ev)


def cmd_resume(args: argparse.Namespace) -> int:
    from cenas_jax.search.rundir import RunDir

    rd = RunDir(args.run_dir)
    cfg = rd.load_config()
    state = rd.load_state()
    print(f"resuming {rd.path} at cycle {state.cycle}, phase {state.phase} (was {state.status})")
    loop, ev = _build(cfg, rd.path, new=False, progress=not args.no_progress)
    return _drive(loop, ev)


def cmd_runs(args: argparse.Namespace) -> int:
    from cenas_jax.errors import UserError
    from cenas_jax.search.rundir import RunDir

    root = Path(args.directory)
    if not root.is_dir():
        raise UserError(f"no such directory: {root}")
    dirs = sorted(d for d in root.iterdir() if (d / "config.yaml").is_file())
    if not dirs:
        print(f"no runs in {root}")
        return 0
    print(f"{'run':40s} {'status':12s} {'cycle':>9s} {'phase':9s} {'candidates':>10s}")
    for d in dirs:
        rd = RunDir(d)
        try:
            st = rd.load_state()
            cfg = rd.load_config()
            status, cyc, phase = st.status, f"{st.cycle}/{cfg.search.cycles}", st.phase
        except UserError as e:
            status, cyc, phase = "unreadable", "?", str(e)[:30]
        n = "?"
        if (d / "store.sqlite").exists():
            from cenas_jax.store import RunStore

            try:
                with RunStore(d, create=False) as s:
                    n = str(sum(1 for r in s.candidates() if (r["cycle"] or 0) >= 0))
            except UserError:
                n = "?"
        print(f"{d.name:40s} {status:12s} {cyc:>9s} {phase:9s} {n:>10s}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cenas_jax.report.export import export_csv

    out = Path(args.out) if args.out else Path(args.run_dir) / "candidates.csv"
    n = export_csv(Path(args.run_dir), out)
    print(f"wrote {n} candidates to {out}")
    return 0
