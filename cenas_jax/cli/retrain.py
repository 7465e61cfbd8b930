"""`cenas retrain RUN_DIR --top K --epochs N`: the best candidates at a long budget, on the test split."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="retrain a run's best candidates with a long budget; test accuracy and the proxy's rank correlation",
        description=(
            "Retrain the K best candidates of RUN_DIR (by proxy quality) from scratch with the run's recipe for N "
            "epochs x S seeds in the sandbox, score them on the held-out test split, store the evaluations in the "
            "run store (budget retrain-Nep, split test), print a table and the Spearman/Kendall correlation of the "
            "proxy with the long budget (bootstrap CIs) beside the reference's 0.926 (1 vs 50 epochs), and write "
            "a JSON file."
        ),
    )
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=10, metavar="K", help="how many candidates (default 10)")
    p.add_argument("--epochs", type=float, required=True, metavar="N", help="the long budget in epochs (e.g. 50)")
    p.add_argument("--seeds", type=int, default=1, metavar="S", help="training seeds per candidate (default 1)")
    p.add_argument("--include-corpus", action="store_true",
                   help="also retrain the seed corpus trained in the run's reference phase (a wider spread of archs)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--out", help="JSON output (default RUN_DIR/retrain-Nep.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_retrain)


def cmd_retrain(args: argparse.Namespace) -> int:
    from cenas_jax.errors import UserError
    from cenas_jax.retrain import budget_label, format_result, retrain, write_json

    if not Path(args.run_dir).is_dir():
        raise UserError(f"{args.run_dir}: not a run directory")
    result = retrain(args.run_dir, args.top, args.epochs, args.seeds, include_corpus=args.include_corpus,
                     n_boot=args.n_boot, progress=not args.no_progress)
    print(format_result(result))
    out = Path(args.out) if args.out else Path(args.run_dir) / f"{budget_label(args.epochs)}.json"
    print(f"wrote {write_json(result, out)}")
    return 0
