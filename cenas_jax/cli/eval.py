"""`cenas eval PATH...`: evaluate candidate files through the sandbox and print one row (or JSON line) each."""

from __future__ import annotations

import argparse
import json
import sys

from cenas_jax.report import fmt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate candidate .py files in the sandbox (policy, build, shape, budget, proxy training)",
        description=(
            "Evaluate architecture files (each defining a flax.linen `Net`) through the sandboxed worker pool: "
            "the static policy, build, shape and parameter-budget checks, then proxy training on a dataset. "
            "A failed candidate is a row with its error kind, never a crash of this command."
        ),
        epilog=(
            "examples:\n"
            "  cenas eval cenas_jax/candidates/corpus/*.py --dataset digits --epochs 1 --seeds 1\n"
            "  cenas eval resnet.py --net ResNet18 --dataset mnist5k --epochs 1   (a file without `Net`)\n"
            "exit status: 0 when at least one candidate passed, 1 when every candidate failed, 2 on bad input"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="candidate source files")
    p.add_argument("--dataset", help="dataset name (sets data.name; default: digits)")
    p.add_argument("--data-dir", help="root holding the on-disk datasets (sets data.data_dir)")
    p.add_argument("--net", metavar="NAME",
                   help="the top-level class (or functools.partial of one) to evaluate, for files without `Net`, "
                        "e.g. --net ResNet18")
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
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seeds is not None:
        overrides.append(f"train.seeds={args.seeds}")
    return load_config(args.config, overrides)


def _read(paths: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(path, source, problem): a file that is not UTF-8 text is kept as a problem, to become its own record."""
    from pathlib import Path

    from cenas_jax.errors import UserError

    out = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{path}: no such file (expected a Python source file defining `Net`)")
        try:
            out.append((path, p.read_text(encoding="utf-8"), None))
        except UnicodeDecodeError as e:
            out.append((path, None, f"not UTF-8 text ({e.reason} at byte {e.start})"))
    return out


def _fmt(value, spec: str) -> str:
    return fmt.num(value, spec, missing="-")


MESSAGE_COLUMN = 100


def format_table(rows: list[tuple[str, object]]) -> str:
    """The records as an aligned text table (path, status, kind, accuracy, params, flops, times, message).

    A message too long for its column (a policy error lists what is allowed) is shortened in the
    table and given in full below it.
    """
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
                message if len(message) <= MESSAGE_COLUMN else message[: MESSAGE_COLUMN - 3] + "...",
            )
        )
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header) - 1)]
    out = []
    for i, row in enumerate([header, *lines]):
        cells = [c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join([*cells, row[-1]]).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    long = [(path, rec.error_message) for path, rec in rows if len((rec.error_message or "").replace("\n", " ")) > MESSAGE_COLUMN]
    if long:
        out.append("")
        out.append("full error messages:")
        for path, message in long:
            out.append(f"{path}: {message}")
    return "\n".join(out)


def cmd_eval(args) -> int:
    from cenas_jax.candidates.backends import make_evaluator
    from cenas_jax.candidates.naming import NetNameError, check_name, select_net
    from cenas_jax.candidates.records import Candidate, EvalRecord
    from cenas_jax.errors import UserError

    cfg = _config(args)
    if args.net is not None:
        try:
            check_name(args.net)
        except NetNameError as e:
            raise UserError(str(e)) from None
    files = _read(args.paths)
    records: dict[int, EvalRecord] = {}
    cands = []
    for i, (path, src, problem) in enumerate(files):
        if problem is None and args.net is not None:
            try:
                src = select_net(src, args.net, where=path)
            except NetNameError as e:
                problem = f"--net: {e}"
        if problem is not None:  # the file itself is the candidate's error: a record, the batch goes on
            records[i] = EvalRecord(candidate_id=f"{i}:{path}", status="error",
                                    error_kind="syntax" if "UTF-8" in problem else "build",
                                    error_message=problem, stage="syntax" if "UTF-8" in problem else "build")
            continue
        cands.append((i, Candidate(id=f"{i}:{path}", source=src)))
    if cands:
        with make_evaluator(cfg.data, cfg.train, cfg.sandbox, seed=cfg.seed) as ev:
            recs = ev.evaluate([c for _, c in cands], train=not args.no_train, progress=not args.no_progress)
        records.update({i: rec for (i, _), rec in zip(cands, recs)})
    rows = [(path, records[i]) for i, (path, _, _) in enumerate(files)]
    ok = sum(rec.status == "ok" for _, rec in rows)
    if args.json:
        for path, rec in rows:
            print(json.dumps({"path": path, **rec.to_dict()}))
    else:
        print(format_table(rows))
    print(f"{ok}/{len(rows)} ok" + ("" if ok else ": every candidate failed"), file=sys.stderr)
    return 0 if ok else 1
