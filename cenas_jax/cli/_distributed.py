"""The ``--distributed`` flags shared by `cenas run`, `cenas resume` and `cenas proxy-snr` (DESIGN.md §7 "Many
hosts"); a module name with a leading underscore registers no sub-command."""

from __future__ import annotations

import argparse


def add_distributed_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--distributed`` and its flags; ``what`` says what the processes do in this command."""
    g = p.add_argument_group(
        "many hosts (jax.distributed)",
        what + " Unset values come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, else from "
        "the cluster JAX detects (Slurm, TPU VMs, Open MPI, Kubernetes).")
    g.add_argument("--distributed", action="store_true", help="join a multi-process run through jax.distributed")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (default $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the run (default $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index (default $JAX_PROCESS_ID)")
    g.add_argument("--peer-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a process silent this long is lost and the run stops at its last checkpoint (default 30)")


def join(args):
    """The process group of a ``--distributed`` run (None without the flag). Must come before any JAX use."""
    if not getattr(args, "distributed", False):
        if any(getattr(args, k, None) is not None for k in ("coordinator", "num_processes", "process_id")):
            from cenas_jax.errors import UserError

            raise UserError("--coordinator, --num-processes and --process-id need --distributed")
        return None
    from cenas_jax.distributed.group import initialize, resolve

    if args.peer_timeout <= 0:
        from cenas_jax.errors import UserError

        raise UserError(f"--peer-timeout must be > 0 seconds, got {args.peer_timeout}")
    return initialize(resolve(args.coordinator, args.num_processes, args.process_id), peer_timeout_s=args.peer_timeout)
