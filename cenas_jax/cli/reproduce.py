"""`cenas reproduce small|paper`: every figure and table of the paper, then SUMMARY.md beside the paper's numbers."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper's figures and tables (small: a 2-core CPU in 2 hours; paper: its scale)",
        description=(
            "Run every experiment of the paper as `cenas` commands (the searches of Figures 1 and 2, the novelty "
            "ablation, the frozen-LLM and random-mutation controls, proxy-snr with the ceiling effect, retrain, "
            "a report per run), then write OUT/SUMMARY.md with its figures: our numbers beside the paper's. "
            "Restartable: a finished step is skipped, an interrupted run resumed; each executed step is logged "
            "with its wall time in OUT/steps.jsonl. Exit codes: 0 done, 1 something missing or a step failed, "
            "2 bad arguments. Needs the experiment configs of a cenas_jax checkout (experiments/configs/)."
        ),
    )
    which = p.add_subparsers(dest="which", metavar="SCALE", required=True)
    s = which.add_parser(
        "small", help="every experiment at 2-core-CPU scale (SmolLM2-135M, digits), then SUMMARY.md, within 2 hours",
        description="Every experiment with the embedded SmolLM2-135M and digits data, sized (with wall-clock caps "
                    "per run) to finish within 2 hours on a 2-core CPU; then SUMMARY.md. `make reproduce-small`.")
    s.add_argument("--out", default="runs/reproduce-small", help="output directory (default: %(default)s)")
    s.add_argument("--plan", action="store_true", help="print the plan and its estimated wall time, and exit")
    s.add_argument("--summary-only", action="store_true", help="only (re)write SUMMARY.md from what exists")
    s.set_defaults(func=cmd_reproduce)
    g = which.add_parser(
        "paper", help="the paper's scale on a GPU/TPU machine (three LLMs, six datasets)",
        description="The paper's scale: 22 cycles x 50 candidates per LLM (three local Llama-family checkpoints), "
                    "six datasets, 50-epoch retrain. The data, checkpoints, accelerators and free disk are checked "
                    "first; nothing runs while something is missing. `make reproduce DATA_DIR=... LLMS=\"...\"`.")
    g.add_argument("--out", default="runs/reproduce", help="output directory (default: %(default)s)")
    g.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="directory holding the six datasets (default: $DATA_DIR; see `cenas datasets --data-dir`)")
    g.add_argument("--llms", default=os.environ.get("LLMS", ""),
                   help='space-separated checkpoint directories, e.g. "dir1 dir2 dir3" (default: $LLMS)')
    g.add_argument("--check", action="store_true",
                   help="check data, checkpoints, devices and disk; print the plan, `cenas plan`'s prediction of each "
                        "search run (seconds per phase, the dominant phase) and the total device-hours; run nothing")
    g.add_argument("--smoke", action="store_true", help="a minutes-long version on one GPU (one LLM, one dataset)")
    g.add_argument("--summary-only", action="store_true", help="only (re)write SUMMARY.md from what exists")
    g.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None,
                   help="with --check: the device kind of the prediction (default: this machine's accelerators, "
                        "else gpu; $DEVICE in make)")
    g.add_argument("--hosts", type=int, default=1, help="with --check: hosts of the prediction (default: 1; $HOSTS)")
    g.add_argument("--devices-per-host", type=int, default=None, metavar="D",
                   help="with --check: GPUs or TPU chips per host (default: this machine's, else 1; $DEVICES)")
    g.add_argument("--costs", metavar="FILE",
                   help="with --check: YAML of per-device figures replacing the built-in ones, as for `cenas plan` "
                        "($COSTS)")
    g.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from cenas_jax.reproduce.execute import reproduce_paper, reproduce_small

    if args.which == "small":
        return reproduce_small(args.out, plan_only=args.plan, summary_only=args.summary_only)
    llms = [x for x in (args.llms or "").split() if x]
    from cenas_jax.errors import UserError

    if args.hosts < 1 or (args.devices_per_host is not None and args.devices_per_host < 1):
        raise UserError("--hosts and --devices-per-host must be >= 1")
    return reproduce_paper(args.out, llms, args.data_dir, check=args.check, smoke=args.smoke,
                           summary_only=args.summary_only, device=args.device, hosts=args.hosts,
                           devices_per_host=args.devices_per_host, costs_file=args.costs)
