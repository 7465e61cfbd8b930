"""`cenas corpus list|check`: the seed corpus L of hand-written architectures."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "corpus",
        help="list or check the seed corpus of architectures",
        description=(
            "The seed corpus L: hand-written Flax linen architectures following the candidate contract. "
            "It warm-starts the LLM, is the replay base of every CE update and the parents of delta edits."
        ),
    )
    actions = p.add_subparsers(dest="corpus_action", metavar="ACTION")
    ls = actions.add_parser("list", help="table of entries: name, family, lines, parameters at the digits shape")
    ls.add_argument("--dir", help="a corpus directory of *.py files (default: the packaged corpus)")
    ls.set_defaults(func=cmd_list)
    ck = actions.add_parser(
        "check",
        help="policy + build + shape check of every entry at every standard input shape (exit 1 on a failure)",
    )
    ck.add_argument("--dir", help="a corpus directory of *.py files (default: the packaged corpus)")
    ck.add_argument("--no-progress", action="store_true", help="no progress bar")
    ck.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _load(args):
    from cenas_jax.candidates.corpus import CorpusError, load_corpus
    from cenas_jax.errors import UserError

    try:
        return load_corpus(args.dir)
    except CorpusError as e:
        raise UserError(str(e)) from None


def cmd_list(args) -> int:
    from cenas_jax.candidates import contract
    from cenas_jax.candidates.errors import CandidateError

    entries = _load(args)
    shape = contract.STANDARD_INPUT_SHAPES["digits"]
    rows = []
    for entry in entries:
        try:
            built = contract.build_net(entry.source, 10)
            params = f"{contract.shape_check(built, shape, 10)[0]:,}"
        except CandidateError as e:
            params = f"error ({e.kind.value})"
        rows.append((entry.name, entry.family, str(entry.lines), params))
    header = ("name", "family", "lines", f"params@{'x'.join(map(str, shape))}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for i, row in enumerate([header, *rows]):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"{len(entries)} entries, {len({e.family for e in entries})} families")
    return 0


def cmd_check(args) -> int:
    from cenas_jax.candidates import contract
    from cenas_jax.candidates.corpus import check_entry, duplicate_structures
    from cenas_jax.progress import progress_bar

    entries = _load(args)
    shapes = contract.STANDARD_INPUT_SHAPES
    checks = []
    for entry in (entries if args.no_progress else progress_bar(entries, desc="corpus check", unit="entry", file=sys.stderr)):
        checks.append(check_entry(entry, shapes))
    failed = 0
    for check in checks:
        if check.ok:
            sizes = " ".join(f"{k}={v:,}" for k, v in check.params.items())
            print(f"ok    {check.name:<28} params {sizes}")
        else:
            failed += 1
            print(f"FAIL  {check.name}")
            for problem in check.problems:
                print(f"      {problem}")
    for a, b in duplicate_structures(checks):
        failed += 1
        print(f"FAIL  {a} and {b} have the same structure hash (the same network)")
    shape_text = ", ".join(f"{k} {v}" for k, v in shapes.items())
    print(f"{len(checks) - failed}/{len(checks)} entries pass policy, build and shape at {shape_text}")
    return 1 if failed else 0
