"""`cenas report RUN_DIR`: PNG figures and a Markdown report of a run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the figures and the Markdown report of a run",
        description=(
            "Reads RUN_DIR/store.sqlite and writes RUN_DIR/report/report.md with PNG figures: quality per cycle "
            "(mean with CI, quantiles, gamma_t, best so far), elite mass C_t against 1-(1-rho_0)^t, valid-generation "
            "rate per mode with Wilson CIs, error kinds, novelty rejections and diversity, and the best "
            "architectures with their code and lineage, beside the paper's figures."
        ),
    )
    p.add_argument("run_dir")
    p.add_argument("--out", help="output directory (default RUN_DIR/report)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from cenas_jax.report.markdown import write_report

    path = write_report(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0
