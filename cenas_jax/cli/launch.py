"""`cenas launch --local-processes N`: a ``--distributed`` run with N processes on this machine."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="start a --distributed run with N processes on this machine (to try multi-host runs, and in tests)",
        description=(
            "Start N processes of `cenas run CONFIG --distributed` (or `cenas resume RUN_DIR --distributed` with "
            "--resume) on this machine, joined through jax.distributed with a coordinator on localhost, one CPU "
            "device each and CPU collectives (gloo). Process 0 owns the run directory and prints as usual; the "
            "others' lines are prefixed [pI]. Without --set sandbox.workers=..., each process gets an equal share "
            "of the cores for its sandbox workers. Ctrl-C and SIGTERM go to every process; the exit code is "
            "process 0's (or the first other non-zero one). On a real cluster, run `cenas run CONFIG "
            "--distributed` on every host instead (README, \"Many hosts\")."),
    )
    p.add_argument("--local-processes", type=int, required=True, metavar="N", help="processes to start (>= 1)")
    p.add_argument("config", nargs="?", help="YAML config of a new run (or use --resume RUN_DIR)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory instead of starting one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), as for `cenas run`")
    p.add_argument("--run-dir", help="where the run is written (as for `cenas run`)")
    p.add_argument("--force", action="store_true", help="replace a finished or interrupted run in --run-dir")
    p.add_argument("--port", type=int, default=0, help="coordinator port on localhost (default: a free one)")
    p.add_argument("--peer-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a process silent this long is lost; the run stops at its last checkpoint (default 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_launch)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(args: argparse.Namespace) -> list[str]:
    """The `cenas` arguments every process runs (the same for all: the id comes from the environment)."""
    from cenas_jax.errors import UserError

    if args.local_processes < 1:
        raise UserError(f"--local-processes must be >= 1, got {args.local_processes}")
    if (args.config is None) == (args.resume is None):
        raise UserError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if args.resume:
        if args.run_dir:
            raise UserError("--run-dir is for a new run; --resume names the run directory")
        cmd = ["resume", args.resume]
    else:
        cmd = ["run", args.config] + (["--run-dir", args.run_dir] if args.run_dir else [])
        cmd += ["--force"] if args.force else []
        if not any(o.split("=", 1)[0].strip() == "sandbox.workers" for o in args.overrides):
            share = max(1, (os.cpu_count() or 1) // args.local_processes)
            cmd += ["--set", f"sandbox.workers={share}"]
    for o in args.overrides:
        cmd += ["--set", o]
    return cmd + ["--distributed", "--peer-timeout", f"{args.peer_timeout:g}"] + (["--no-progress"] if args.no_progress or args.local_processes > 1 else [])


def cmd_launch(args: argparse.Namespace) -> int:
    n = args.local_processes
    argv = commands(args)
    address = f"localhost:{args.port or free_port()}"
    print(f"launching {n} processes: cenas {' '.join(argv)} (coordinator {address})", flush=True)
    procs: list[subprocess.Popen] = []
    for i in range(n):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i),
                   JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        procs.append(subprocess.Popen([sys.executable, "-m", "cenas_jax", *argv], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1))
    pumps = [threading.Thread(target=_pump, args=(p, "" if i == 0 else f"[p{i}] "), daemon=True)
             for i, p in enumerate(procs)]
    for t in pumps:
        t.start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for t in pumps:
        t.join(timeout=5)
    rc = codes[0] if codes[0] != 0 else next((c for c in codes if c != 0), 0)
    if any(c != 0 for c in codes):
        print("exit codes: " + ", ".join(f"p{i} {c}" for i, c in enumerate(codes)), flush=True)
    return rc


def _pump(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("[Gloo]"):  # gloo's connection chatter
            continue
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
