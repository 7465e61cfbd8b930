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


def format_table(infos, data_dir: str | None = None, verbose: bool = False) -> str:
    """The table ``cenas datasets`` prints: one row per dataset, and where a missing one's files go."""
    header = ("name", "source", "available", "shape", "classes", "examples", "description")
    rows = [
        (
            i.name,
            i.source,
            "yes" if i.available else "no",
            _fmt_shape(i.input_shape),
            str(i.num_classes) if i.num_classes is not None else "-",
            str(i.num_examples) if i.num_examples is not None else "-",
            i.description,
        )
        for i in infos
    ]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    where = data_dir if data_dir else "--data-dir"
    missing = [i for i in infos if not i.available]
    if missing:
        lines.append("")
        lines.append(f"Missing datasets: put their files under {where} as")
        for i in missing:
            lines.append(f"  {i.name.ljust(widths[0])}  {i.expected}")
            if verbose:
                lines.append(f"  {' ' * widths[0]}  ({i.note})")
    if verbose:
        for i in infos:
            if i.available and i.path:
                lines.append(f"{i.name}: found at {i.path}")
    lines.append("")
    lines.append("Your own images: --set data.name=folder:/path/to/dir (class sub-folders, or train/ and val/ or test/ of them).")
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
    infos = list_datasets(args.data_dir, image_size=args.image_size)
    print(format_table(infos, data_dir=args.data_dir, verbose=args.verbose))
    return 0
