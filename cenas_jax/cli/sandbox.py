"""`cenas sandbox check`: which isolation layers hold on this machine, probed from inside a worker."""

from __future__ import annotations

import argparse
import json

# Layers without which the sandbox is not what DESIGN.md §3 asks for; the others are extras.
ESSENTIAL = (
    "net_namespace", "mount_namespace", "pid_namespace", "readonly_root", "private_tmp", "uid_drop",
    "no_new_privs", "no_network", "no_remount", "rlimit_cpu", "rlimit_nproc", "rlimit_fsize",
    "threads_unprivileged", "no_signal_parent", "host_files_unchanged", "tracer_own_uid", "tracer_no_data",
)  # fmt: skip
# A worker on a GPU runs without a pid namespace: CUDA's cuInit fails inside one (isolation.IsolationPlan).
ACCELERATOR_ESSENTIAL = tuple(n for n in ESSENTIAL if n != "pid_namespace")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox",
        help="inspect the candidate sandbox",
        description="The sandbox that runs untrusted candidate code (DESIGN.md §3).",
    )
    actions = p.add_subparsers(dest="sandbox_action", metavar="ACTION")
    ck = actions.add_parser(
        "check",
        help="start a worker and report which isolation layers are active (exit 1 if an essential one is not)",
        description=(
            "Starts one sandbox worker and probes from inside it: namespaces (net, mount, pid, user), a read-only "
            "root (writes outside the private tmpfs), private /tmp and /dev/shm, the uid drop (every thread), "
            "no_new_privs, network, remounting, rlimits, seccomp, signalling the parent; from inside a tracer (where "
            "candidate code runs) its own uid and no view of the datasets; then checks on the host that no probe "
            "file appeared."
        ),
        epilog="example: cenas sandbox check",
    )
    ck.add_argument("--config", help="a YAML config (its sandbox section is used)")
    ck.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    ck.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_check(args) -> int:
    from cenas_jax.candidates import placement
    from cenas_jax.candidates.evaluator import Evaluator
    from cenas_jax.config import load_config, replace

    cfg = load_config(args.config, args.set)
    sandbox_cfg = replace(cfg.sandbox, workers=1)
    with Evaluator(cfg.data, cfg.train, sandbox_cfg) as ev:
        report = ev.probe_isolation()
    layers = report["layers"]
    essential = ESSENTIAL if report.get("backend") in ("cpu", "", None) else ACCELERATOR_ESSENTIAL
    missing = [name for name in essential if not layers.get(name, {}).get("active")]
    if args.json:
        print(json.dumps({**report, "missing": missing}, indent=2))
        return 1 if missing else 0
    print(f"isolation mode: {report['mode']}")
    print(f"worker's JAX: {report.get('backend') or '?'} ({', '.join(report.get('devices') or []) or 'no devices'}); "
          f"a run's pool here: {placement.pool_size(ev.inventory, cfg.sandbox)} worker(s) on {ev.inventory.describe()}")
    if report.get("host_tuning"):
        print(f"probe worker's host tuning: {report['host_tuning']}")
    for note in report.get("notes", []):
        print(f"note: {note}")
    width = max(len(n) for n in layers)
    for name, layer in layers.items():
        state = "active" if layer["active"] else ("MISSING" if name in essential else "off")
        print(f"  {name.ljust(width)}  {state:<7}  {layer['detail']}")
    if missing:
        print(
            "WARNING: the sandbox is weaker than designed; not active: "
            + ", ".join(missing)
            + ". Candidates are then held by the static policy, restricted builtins and rlimits only."
        )
        return 1
    print("all essential layers are active")
    return 0
