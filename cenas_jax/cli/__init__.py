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


# Set when a command stopped with device work possibly still running (a stop abandoned a sampling batch or a
# CE update): ``entry`` then ends the process with os._exit once the exit code is known and output flushed,
# because finalising the interpreter under a running XLA computation crashes (SIGSEGV, exit code lost).
HARD_EXIT = False


def entry() -> None:
    """The ``cenas`` executable (and ``python -m cenas_jax``)."""
    import os

    # On a GPU the search process (the LLM) shares devices with the sandbox workers: JAX's default of
    # preallocating 75% of a device would leave them nothing (see candidates/placement.py).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from cenas_jax import hostmem

    # Once, before anything is allocated: glibc reads its malloc tunables at start (hostmem's doc).
    hostmem.restart_with_hugepages(["-m", "cenas_jax", *sys.argv[1:]])
    rc = main()
    if HARD_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


def main(argv: list[str] | None = None) -> int:
    global HARD_EXIT
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from cenas_jax import hostmem

    hostmem.keep_freed_memory()  # the LLM's and XLA's large buffers re-used, not re-mapped (DESIGN.md §3 "Pool scaling on CPU")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        HARD_EXIT = True  # an abort may leave anything in flight
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a user-facing error: print it clearly, no traceback
        from cenas_jax.errors import USER_ERRORS

        if isinstance(e, USER_ERRORS):
            print(f"cenas: error: {e}", file=sys.stderr)
            return 2
        full = _no_space(e)
        if full is not None:
            print(f"cenas: error: {_disk_full_message(full, args)}", file=sys.stderr)
            return 2
        raise


def _no_space(e: BaseException | None) -> OSError | None:
    """The ENOSPC error behind ``e`` (its cause or context chain), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == 28:
            return e
        e = e.__cause__ or e.__context__
    return None


def _disk_full_message(e: OSError, args) -> str:
    """No space left: where, how much is free, and how much the run needs (its size per cycle so far)."""
    import shutil
    from pathlib import Path

    where = Path(e.filename or getattr(args, "run_dir", None) or ".")
    probe = where if where.is_dir() else where.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    msg = f"no space left on the device of {where} ({free / 2**20:.1f} MiB free)"
    run_dir = Path(args.run_dir) if getattr(args, "run_dir", None) else None
    if run_dir is not None and run_dir.is_dir():
        used = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
        cycles = len(list((run_dir / "checkpoints").glob("cycle_*")))
        if cycles:
            msg += (f"; the run directory holds {used / 2**20:.1f} MiB after {cycles} cycle(s), about "
                    f"{used / cycles / 2**20:.1f} MiB a cycle: free at least that much per remaining cycle")
        else:
            msg += (f"; the run directory holds {used / 2**20:.1f} MiB before its first cycle ended: free at least "
                    f"that much again per cycle")
    return (msg + ". What was recorded is intact; `cenas resume "
            + (str(run_dir) if run_dir else "RUN_DIR") + "` continues once there is space")


if __name__ == "__main__":
    entry()
