"""The ``cenas`` command line: thin; each sub-command lives in its own module here.

Every module in this package defines ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` on the parser to a handler ``(args) -> int``.
Handlers import the library lazily, so ``cenas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cenas_jax import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cenas",
        description=(
            "cenas_jax: LLM-based neural architecture search as a parametric cross-entropy method. "
            "An LLM proposes Flax architectures, a sandbox trains them briefly, the best fraction "
            "are the elites, and fine-tuning the LLM on them is the CE update."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cenas_jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a user-facing error: print it clearly, no traceback
        from cenas_jax.errors import USER_ERRORS

        if isinstance(e, USER_ERRORS):
            print(f"cenas: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
