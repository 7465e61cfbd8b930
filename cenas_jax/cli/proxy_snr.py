"""`cenas proxy-snr CONFIG`: proxy reliability (result 6) measured beside its closed form."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


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
    p.set_defaults(func=cmd_proxy_snr)


def cmd_proxy_snr(args: argparse.Namespace) -> int:
    from cenas_jax.config import load_config
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
    result = None
    if not args.ceiling_only:
        result = experiment.run_proxy_snr(cfg, out, progress=progress)
        print(format_analysis(result.analysis))
        for f in result.failures:
            print(f"  dropped {f['id']} ({f['budget']}): {f['error'][:160]}")
    if args.run_dir:
        ceiling = experiment.ceiling_effect(args.run_dir, cfg, with_truth=args.ceiling_truth, progress=progress)
        print(format_ceiling(ceiling))
        jp, pp = experiment.write_ceiling(ceiling, out)
        print(f"wrote {jp}" + (f" and {pp}" if pp else ""))
        if result is not None:
            plot_rho_vs_snr(result.analysis, result.png_path, ceiling=ceiling)
    if result is not None:
        print(f"wrote {result.json_path} and {result.png_path}")
    return 0
