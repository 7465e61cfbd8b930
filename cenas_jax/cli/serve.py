"""`cenas serve RUN_DIR ...`: the live view of runs in a browser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a live view of runs in the browser (read-only)",
        description=(
            "Serves a web page with the runs' progress, per-cycle statistics (valid rates with Wilson CIs, Q with "
            "CIs, gamma_t, elite mass against Theorem 3's bound, novelty, time per phase), the theory panel, an "
            "accuracy-against-parameters scatter with the Pareto front, and every candidate (filter, sort, and "
            "open one for its code, diff to the parent, lineage, prompt and raw LLM answer). It updates every "
            "few seconds while a run goes. The stores are read, never written, and a running search is never "
            "blocked. Several runs are shown side by side. A JSON API is under /api/ (runs, "
            "runs/NAME, runs/NAME/candidates, runs/NAME/candidates/ID).\n\n"
            "It listens on 127.0.0.1 only, by default. To watch a run on a remote machine, tunnel the port: "
            "ssh -N -L 8765:127.0.0.1:8765 USER@HOST, then open http://127.0.0.1:8765/ locally. "
            "`cenas report RUN_DIR --html` writes the same views as one file instead."
        ),
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories, `cenas proxy-snr` output folders (with proxy_snr.json), or folders "
                        "holding either (searched one level down)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; use an SSH tunnel to reach it)")
    p.set_defaults(func=cmd_serve)


def find_runs(paths: list[str]) -> tuple[list, list]:
    """(run directories, proxy-snr output folders) named by ``paths``: each itself, or its sub-directories."""
    from pathlib import Path

    from cenas_jax.errors import UserError
    from cenas_jax.proxy_snr.experiment import RESULT_JSON
    from cenas_jax.store import STORE_FILENAME

    runs, snr = [], []

    def kind(d: Path) -> list | None:
        return runs if (d / STORE_FILENAME).is_file() else snr if (d / RESULT_JSON).is_file() else None

    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"{p}: no such directory")
        if (k := kind(p)) is not None:
            k.append(p)
            continue
        subs = [(d, kind(d)) for d in sorted(p.iterdir()) if d.is_dir()]
        subs = [(d, k) for d, k in subs if k is not None]
        if not subs:
            raise UserError(f"{p}: not a run directory (no {STORE_FILENAME}) or a proxy-snr result (no "
                            f"{RESULT_JSON}), and no run directory inside it")
        for d, k in subs:
            k.append(d)
    return runs, snr


def cmd_serve(args: argparse.Namespace) -> int:
    import socket

    from cenas_jax.errors import UserError

    runs, snr = find_runs(args.run_dirs)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be in 1..65535")
    try:  # a clear error before uvicorn's own
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); choose another --port") from None
    from cenas_jax.view.server import serve

    serve(runs, host=args.host, port=args.port, snr_dirs=snr)
    return 0
