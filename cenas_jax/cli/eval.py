"""`cenas eval PATH...`: evaluate candidate files through the sandbox and print one row (or JSON line) each."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate candidate .py files in the sandbox (policy, build, shape, budget, proxy training)",
        description=(
            "Evaluate architecture files (each defining a flax.linen `Net`) through the sandboxed worker pool: "
            "the static policy, build, shape and parameter-budget checks, then proxy training on a dataset. "
            "A failed candidate is a row with its error kind, never a crash of this command."
        ),
        epilog="example: cenas eval cenas_jax/candidates/corpus/*.py --dataset digits --epochs 1 --seeds 1",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="candidate source files")
    p.add_argument("--dataset", help="dataset name (sets data.name; default: digits)")
    p.add_argument("--epochs", type=float, help="training epochs (sets train.epochs)")
    p.add_argument("--seeds", type=int, help="training seeds per candidate (sets train.seeds)")
    p.add_argument("--config", help="a YAML config (a RunConfig: data, train, sandbox sections are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--no-train", action="store_true", help="run only the cheap stages (syntax..budget)")
    p.add_argument("--json", action="store_true", help="print one JSON object per candidate instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _config(args):
    from cenas_jax.config import load_config

    overrides = list(args.set)
    if args.dataset is not None:
        overrides.append(f"data.name={args.dataset}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seeds is not None:
        overrides.append(f"train.seeds={args.seeds}")
    return load_config(args.config, overrides)


def _read(paths: list[str]) -> list[tuple[str, str]]:
    from pathlib import Path

    from cenas_jax.errors import UserError

    out = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{path}: no such file (expected a Python source file defining `Net`)")
        try:
            out.append((path, p.read_text(encoding="utf-8")))
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return out


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[tuple[str, object]]) -> str:
    """The records as an aligned text table (path, status, kind, accuracy, params, flops, times, message)."""
    header = ("path", "status", "error_kind", "accuracy", "params", "flops", "compile_s", "train_s", "error_message")
    lines = []
    for path, rec in rows:
        message = (rec.error_message or "").replace("\n", " ")
        lines.append(
            (
                path,
                rec.status,
                rec.error_kind or "-",
                _fmt(rec.accuracy, ".4f"),
                _fmt(rec.params, ","),
                _fmt(rec.flops, ".3g"),
                _fmt(rec.compile_s, ".2f"),
                _fmt(rec.train_s, ".2f"),
                message if len(message) <= 100 else message[:97] + "...",
            )
        )
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header) - 1)]
    out = []
    for i, row in enumerate([header, *lines]):
        cells = [c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(out)


def cmd_eval(args) -> int:
    from cenas_jax.candidates.sandbox import Candidate, Evaluator

    cfg = _config(args)
    files = _read(args.paths)
    cands = [Candidate(id=f"{i}:{path}", source=src) for i, (path, src) in enumerate(files)]
    with Evaluator(cfg.data, cfg.train, cfg.sandbox, seed=cfg.seed) as ev:
        records = ev.evaluate(cands, train=not args.no_train, progress=not args.no_progress)
    rows = [(path, rec) for (path, _), rec in zip(files, records)]
    if args.json:
        for path, rec in rows:
            print(json.dumps({"path": path, **rec.to_dict()}))
    else:
        print(format_table(rows))
        ok = sum(rec.status == "ok" for _, rec in rows)
        print(f"{ok}/{len(rows)} ok", file=sys.stderr)
    return 0
