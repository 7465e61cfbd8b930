"""``cenas datasets``: which datasets exist, which are available under a data directory, their shapes."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list the datasets, whether their files are present, and their shapes / classes",
        description=(
            "List the embedded datasets and the on-disk ones, with the files each expects under "
            "--data-dir and whether they are present. Any directory of class sub-folders of images "
            "also works by name as folder:/path/to/dir."
        ),
    )
    p.add_argument("--data-dir", default=None, help="root holding the on-disk datasets")
    p.add_argument("--image-size", type=int, default=64, help="resize target of the image-folder datasets (default 64)")
    p.add_argument("--verbose", "-v", action="store_true", help="also say why an unavailable dataset is missing")
    p.set_defaults(func=run)


def _fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape) if shape else "-"


def format_table(infos, verbose: bool = False) -> str:
    """The table ``cenas datasets`` prints, one row per dataset."""
    header = ("name", "source", "available", "shape", "classes", "examples", "expected files / description")
    rows = []
    for i in infos:
        rows.append(
            (
                i.name,
                i.source,
                "yes" if i.available else "no",
                _fmt_shape(i.input_shape),
                str(i.num_classes) if i.num_classes is not None else "-",
                str(i.num_examples) if i.num_examples is not None else "-",
                f"{i.expected} — {i.description}" if i.source == "disk" else i.description,
            )
        )
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
    if verbose:
        for i in infos:
            if not i.available:
                lines.append(f"{i.name}: {i.note}")
            elif i.path:
                lines.append(f"{i.name}: found at {i.path}")
    lines.append("Your own images: --set data.name=folder:/path/to/dir (class sub-folders, or train/ and val/|test/ of them).")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cenas_jax.data import list_datasets
    from cenas_jax.errors import UserError

    if args.data_dir is not None:
        from pathlib import Path

        if not Path(args.data_dir).expanduser().is_dir():
            raise UserError(f"--data-dir {args.data_dir}: not a directory")
    if args.image_size < 4:
        raise UserError("--image-size must be >= 4")
    print(format_table(list_datasets(args.data_dir, image_size=args.image_size), verbose=args.verbose))
    return 0
