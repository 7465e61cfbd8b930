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
    p.add_argument("--html", action="store_true",
                   help="also write report.html: the live view's pages as one self-contained file (charts, theory "
                        "panel, the candidate table with each candidate's code, diff, prompt and answer), no server "
                        "and no network needed, for sharing and for clusters with no open ports")
    p.add_argument("--compare", nargs="+", metavar="DIR", default=[],
                   help="with --html: more runs shown side by side in report.html (novelty on/off, the controls), "
                        "and `cenas proxy-snr` output folders (result 6)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cenas_jax.errors import UserError
    from cenas_jax.report.analysis import analyse
    from cenas_jax.report.markdown import write_report

    if args.compare and not args.html:
        raise UserError("--compare adds runs to report.html: give --html too")
    analysis = analyse(args.run_dir)
    path = write_report(args.run_dir, args.out, analysis)
    print(f"wrote {path}")
    if analysis.throughput is not None:
        print(f"throughput: {analysis.throughput.line()}")
    if args.html:
        from cenas_jax.cli.serve import find_runs
        from cenas_jax.view.page import write_html

        runs, snr = find_runs(args.compare) if args.compare else ([], [])
        html = write_html([Path(args.run_dir), *runs], path.parent / "report.html", snr)
        print(f"wrote {html} ({html.stat().st_size / 2**20:.1f} MiB, self-contained: open it in any browser)")
    return 0
