"""`cenas proxy-snr CONFIG`: proxy reliability (result 6) measured beside its closed form."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cenas_jax.cli._distributed import add_distributed_args, join


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proxy-snr",
        help="measure the proxy's SNR and rank correlation against a long budget (result 6)",
        description=(
            "Train K architectures (the corpus, or a run's candidates with proxy_snr.from_run) x S seeds at the "
            "proxy budget and at a long budget taken as ground truth; estimate sigma2_arch and sigma2_noise by "
            "one-way ANOVA; print and save (JSON + PNG) the predicted and measured Spearman rho_S of proxy vs "
            "truth and of two proxy seeds, with bootstrap CIs. With --run, also the ceiling effect: the same per "
            "cycle of a search run, as sigma2_arch shrinks. Settings: the proxy_snr section of CONFIG."
        ),
    )
    p.add_argument("config", help="YAML config (e.g. experiments/configs/table_proxy_reliability.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set proxy_snr.seeds=4 (repeatable)")
    p.add_argument("--out", help="output directory (default: runs/proxy_snr-<config name>-<time>)")
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR",
                   help="also compute the ceiling effect of this run, cycle by cycle")
    p.add_argument("--ceiling-truth", action="store_true",
                   help="with --run: also train the run's candidates at the long budget (proxy vs truth per cycle)")
    p.add_argument("--ceiling-only", action="store_true", help="with --run: skip the K x S experiment")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    add_distributed_args(p, "Run with every process of a multi-host job (`cenas launch` does not start this one: "
                            "run it on each host, or N times on one machine with the flags). Process 0 writes the "
                            "results; the others take the config from it and score their share of the "
                            "architectures on their own sandbox workers.")
    p.set_defaults(func=cmd_proxy_snr)


def cmd_proxy_snr(args: argparse.Namespace) -> int:
    group = join(args)
    if group is None:
        return _proxy_snr(args, None)
    from cenas_jax.distributed import roles

    if not group.is_primary:
        import cenas_jax.cli as cli
        from cenas_jax.config import RunConfig, from_dict
        from cenas_jax.proxy_snr.experiment import evaluator_score_fn

        def build(config: dict):
            cfg = from_dict(RunConfig, config)
            host = roles.ScoreHost(evaluator_score_fn(cfg.data, cfg.sandbox,
                                                      seeds_per_task=cfg.proxy_snr.seeds_per_task))
            return host, host

        cli.HARD_EXIT = True  # (as in `cenas run --distributed`: process 0's service may be gone at exit)
        return roles.serve(group, build)
    try:
        rc = _proxy_snr(args, group)
    except BaseException as e:
        roles.abort_others(group, f"{type(e).__name__}: {e}")
        raise
    return rc


def _proxy_snr(args: argparse.Namespace, group) -> int:
    from cenas_jax.config import load_config, to_dict
    from cenas_jax.errors import UserError
    from cenas_jax.proxy_snr import experiment
    from cenas_jax.report.proxy_snr import format_analysis, format_ceiling, plot_rho_vs_snr

    if (args.ceiling_only or args.ceiling_truth) and not args.run_dir:
        raise UserError("--ceiling-only and --ceiling-truth need --run RUN_DIR")
    if args.run_dir and not Path(args.run_dir).is_dir():
        raise UserError(f"--run {args.run_dir}: not a run directory")
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or f"runs/proxy_snr-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    progress = not args.no_progress
    score_fn = primary = None
    if group is not None:
        from cenas_jax.distributed import roles

        primary = roles.Primary(group)
        primary.hello(to_dict(cfg))
        primary.wait_ready(roles.ScoreHost.fingerprint)
        print(f"{group.num_processes} processes ready", flush=True)
        score_fn = roles.distributed_score_fn(primary, experiment.evaluator_score_fn(
            cfg.data, cfg.sandbox, progress, seeds_per_task=cfg.proxy_snr.seeds_per_task))
    try:
        return _measure(args, cfg, out, progress, score_fn, experiment, format_analysis, format_ceiling, plot_rho_vs_snr)
    finally:
        if primary is not None:
            primary.shutdown("proxy-snr ended")


def _measure(args, cfg, out, progress, score_fn, experiment, format_analysis, format_ceiling, plot_rho_vs_snr) -> int:
    result = None
    if not args.ceiling_only:
        result = experiment.run_proxy_snr(cfg, out, progress=progress, score_fn=score_fn)
        print(format_analysis(result.analysis))
        for f in result.failures:
            print(f"  dropped {f['id']} ({f['budget']}): {f['error'][:160]}")
    if args.run_dir:
        ceiling = experiment.ceiling_effect(args.run_dir, cfg, with_truth=args.ceiling_truth, progress=progress,
                                            score_fn=score_fn)
        print(format_ceiling(ceiling))
        jp, pp = experiment.write_ceiling(ceiling, out)
        print(f"wrote {jp}" + (f" and {pp}" if pp else ""))
        if result is not None:
            plot_rho_vs_snr(result.analysis, result.png_path, ceiling=ceiling)
    if result is not None:
        print(f"wrote {result.json_path} and {result.png_path}")
    return 0
