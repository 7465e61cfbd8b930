"""The isolation probe behind ``cenas sandbox check``: which layers hold, asked from inside a worker.

The parent sends a started worker a "probe" message with its own namespace ids
and a few host paths (a file in the package directory, one in the sandbox's
temp root, one in the system temp dir); the worker reports, layer by layer,
what it sees from inside (``isolation.describe_isolation``, its threads' uids,
whether it can signal the parent, the tracer's view) and tries to create the
files. The parent then checks that none of them appeared on the host, removes
any that did, and adds that check as the layer ``host_files_unchanged``. The
Evaluator starts the worker and retires it afterwards (``Evaluator.probe_isolation``):
a probed worker is never reused.
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
import time

from cenas_jax.candidates import isolation
from cenas_jax.candidates.errors import SandboxError
from cenas_jax.candidates.handle import WorkerHandle
from cenas_jax.candidates.records import clip_text

REPORT_TIMEOUT_S = 60


def _package_dir() -> str:
    import cenas_jax

    return os.path.dirname(os.path.abspath(cenas_jax.__file__))


def probe_paths(sandbox_root: str) -> list[str]:
    """The host paths the worker tries to create: in the package, the sandbox's root, the system temp dir."""
    return [
        os.path.join(_package_dir(), f".cenas-probe-{os.getpid()}"),
        os.path.join(sandbox_root, f"probe-{os.getpid()}"),
        os.path.join(tempfile.gettempdir(), f"cenas-probe-{os.getpid()}", "x"),
    ]


def ask(w: WorkerHandle, paths: list[str]) -> dict | None:
    """Send the probe to the started worker ``w``; its "probe" message, or None when none came in time."""
    w.send({"type": "probe", "host_ns": isolation.host_namespaces(), "paths": paths, "parent_pid": os.getpid()})
    report = None
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while report is None and time.monotonic() < deadline:
        select.select([w.results_r], [], [], 1.0)
        for msg in w.read():
            if msg.get("type") == "probe":
                report = msg
        if w.eof:
            break
    return report


def summarize(report: dict | None, paths: list[str], sandbox_root: str, mode: str | None) -> dict:
    """``{"mode", "notes", "layers": {layer: {"active", "detail"}}, "backend", "devices", "host_tuning"}`` from the worker's
    report (raises SandboxError when there is none), with the host-side check that no probe file appeared."""
    if report is None:
        raise SandboxError("the probe worker gave no report")
    pkg_dir = _package_dir()
    layers = {k: v for k, v in report.get("report", {}).items() if isinstance(v, dict)}
    leaked = []
    for p in paths:
        for q in (p, os.path.dirname(p)):
            if os.path.exists(q) and q != tempfile.gettempdir() and q != sandbox_root and q != pkg_dir:
                leaked.append(q)
    for q in leaked:
        (shutil.rmtree if os.path.isdir(q) else os.remove)(q)
    layers["host_files_unchanged"] = {
        "active": not leaked,
        "detail": "no probe file appeared outside the sandbox" if not leaked else f"created {leaked}",
    }
    raw = report.get("report", {})
    devices = raw.get("jax_devices") if isinstance(raw.get("jax_devices"), list) else []
    return {"mode": mode, "notes": report.get("notes", []), "layers": layers,
            "backend": (clip_text(raw.get("jax_backend")) or "")[:40],  # the worker's JAX, as it reported it
            "devices": [(clip_text(d) or "")[:120] for d in devices[:16]],
            "host_tuning": (clip_text(raw.get("host_tuning")) or "")[:200]}
