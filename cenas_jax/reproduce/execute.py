"""Running a reproduction plan: each step as a ``cenas`` subprocess, restartable, logged; then SUMMARY.md.

A finished run is skipped and an interrupted one resumed (``cenas resume``); proxy-snr and retrain outputs
are reused when present. Every executed step is appended to ``OUT/steps.jsonl`` (command, start, seconds,
exit code), which the summary's wall-time table reads. :func:`reproduce_small` and :func:`reproduce_paper`
are ``cenas reproduce small|paper``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cenas_jax.report import summary_render
from cenas_jax.report.fmt import duration
from cenas_jax.report.summary import ExecutedStep, PlannedRun, PlannedStep, Reproduction, Summary
from cenas_jax.report.summary_read import read_summary
from cenas_jax.reproduce import checks
from cenas_jax.reproduce.costs import format_plan_cost, plan_cost
from cenas_jax.reproduce.plan import (
    Plan,
    Step,
    format_plan,
    llm_of,
    paper_datasets,
    paper_plan,
    planned_config,
    small_plan,
)

STEP_LOG = "steps.jsonl"
Echo = Callable[[str], Any]


def run_state(rd: Path) -> str | None:
    """The status in a run directory's state.json; None when there is none (not started) or it is unreadable."""
    try:
        return json.loads((rd / "state.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def execute(plan: Plan, echo: Echo = print) -> int:
    """Run the plan's steps in order, resuming what is unfinished; returns the number of failed steps.

    The steps run as ``python -m cenas_jax ...`` in the current directory, so a relative ``--out`` means
    the same directory to them as to the summary."""
    failed = 0
    cenas = [sys.executable, "-m", "cenas_jax"]
    env = dict(os.environ)
    for s in plan.steps:
        args = list(s.args)
        if s.kind == "run":
            st = run_state(s.out)
            if st == "finished":
                echo(f"[{s.name}] finished earlier: {s.out}")
                continue
            if st is not None:
                args = ["resume", str(s.out), "--no-progress"]
        elif s.kind in ("proxy_snr", "retrain") and (s.out / "proxy_snr.json" if s.kind == "proxy_snr" else s.out).exists():
            echo(f"[{s.name}] done earlier: {s.out}")
            continue
        elif s.kind == "retrain" and not (Path(args[1]) / "store.sqlite").exists():
            echo(f"[{s.name}] skipped: {args[1]} has no run store")
            failed += 1
            continue
        elif s.kind == "report" and not (s.out.parent / "store.sqlite").exists():
            echo(f"[{s.name}] skipped: no run store in {s.out.parent}")
            continue
        echo(f"[{s.name}] cenas {' '.join(args)}")
        t0 = time.time()
        rc = subprocess.call(cenas + args, env=env)
        secs = time.time() - t0
        echo(f"[{s.name}] exit {rc} after {duration(secs)}")
        _log_step(plan.out, s, args, t0, secs, rc)
        failed += rc != 0
    return failed


def _log_step(out: Path, step: Step, args: Sequence[str], t0: float, secs: float, rc: int) -> None:
    """Append one executed step to ``out/steps.jsonl`` (the summary's wall-time table reads it)."""
    out.mkdir(parents=True, exist_ok=True)
    rec = {"step": step.name, "kind": step.kind, "args": list(args), "est_s": step.est_s,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "seconds": round(secs, 1), "rc": rc}
    with open(out / STEP_LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_step_log(out: Path) -> list[dict[str, Any]]:
    """The executed steps, oldest first; unreadable lines (a run killed mid-write) are skipped."""
    recs = []
    try:
        lines = (out / STEP_LOG).read_text().splitlines()
    except OSError:
        return recs
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("seconds"), (int, float)) and isinstance(r.get("step"), str):
            recs.append(r)
    return recs


# ---------------------------------------------------------------------------------------------- the summary


def reproduction(plan: Plan) -> Reproduction:
    """What the plan set out to do and what its step log says was run: the summary's input."""
    run_steps = [s for s in plan.steps if s.kind == "run"]
    return Reproduction(
        name=plan.name,
        scale="SmolLM2-135M-Instruct on digits, 2-core CPU scale." if plan.name == "reproduce-small" else "paper scale.",
        out=plan.out,
        runs=tuple(PlannedRun(s.name, s.out, planned_config(s).search.cycles, llm_of(s), run_state(s.out))
                   for s in run_steps),
        steps=tuple(PlannedStep(s.name, s.est_s) for s in plan.steps),
        proxy_snr_dir=next((s.out for s in plan.steps if s.kind == "proxy_snr"), plan.out / "table_proxy_reliability"),
        retrain_json=next((s.out for s in plan.steps if s.kind == "retrain"), plan.out / "retrain.json"),
        step_log=plan.out / STEP_LOG,
        executed=tuple(ExecutedStep(r["step"], float(r["seconds"]), r.get("rc"), r.get("started"))
                       for r in read_step_log(plan.out)),
        budget_s=plan.budget_s)


def summary(plan: Plan) -> Summary:
    """The plan's outputs (whatever exists) read into the summary's numbers."""
    return read_summary(reproduction(plan))


def write_summary(plan: Plan, path: str | Path | None = None) -> Path:
    """Read the plan's outputs and write SUMMARY.md (default ``OUT/SUMMARY.md``) with its figures beside it."""
    return summary_render.write_summary(summary(plan), Path(path) if path else plan.out / "SUMMARY.md")


# ---------------------------------------------------------------------------------------------- the commands


def _predicted_cost(plan: Plan, device: str | None, hosts: int, devices_per_host: int | None,
                    costs_file: str | None) -> str:
    """``cenas plan``'s prediction of the plan, as text (the device kind and count default to this machine's
    accelerators, else one GPU: the paper's scale is not for a CPU)."""
    from cenas_jax.candidates.placement import detect_inventory
    from cenas_jax.plan import default_costs, load_costs

    files = load_costs(costs_file) if costs_file else {}
    inv = detect_inventory()
    guessed = device is None
    if device is None:
        device = inv.platform if inv.platform in ("gpu", "tpu") else "gpu"
    if devices_per_host is None:
        devices_per_host = len(inv.devices) if inv.platform == device and inv.devices else 1
    text = format_plan_cost(plan_cost(plan, files.get(device) or default_costs(device), hosts, devices_per_host))
    if guessed and inv.platform == "cpu":
        text += "\n  - no accelerator on this machine: one GPU assumed (DEVICE=gpu|tpu DEVICES=N HOSTS=N set it)"
    return text


def _run_and_summarise(plan: Plan, summary_only: bool, echo: Echo) -> int:
    failed = 0
    if not summary_only:
        failed = execute(plan, echo)
        if failed:
            echo(f"{failed} step(s) failed; the summary covers what finished")
    echo(f"wrote {write_summary(plan)}")
    return 1 if failed else 0


def reproduce_small(out: str | Path = "runs/reproduce-small", plan_only: bool = False, summary_only: bool = False,
                    echo: Echo = print) -> int:
    """``cenas reproduce small``: print the plan, run it (unless ``plan_only``/``summary_only``), write the summary.
    Returns the exit code: 1 when a step failed."""
    plan = small_plan(out)
    echo(format_plan(plan))
    if plan_only:
        return 0
    return _run_and_summarise(plan, summary_only, echo)


def reproduce_paper(out: str | Path = "runs/reproduce", llms: Sequence[str] = (), data_dir: str | None = None,
                    check: bool = False, smoke: bool = False, summary_only: bool = False, echo: Echo = print, *,
                    device: str | None = None, hosts: int = 1, devices_per_host: int | None = None,
                    costs_file: str | None = None) -> int:
    """``cenas reproduce paper``: print the plan and the checks; with everything there, run it (unless ``check``)
    and write the summary. Returns the exit code: 1 when something is missing or a step failed.

    With ``check``, also ``cenas plan``'s prediction of every search run and the total device-hours on ``hosts`` x
    ``devices_per_host`` devices of kind ``device`` (default: this machine's accelerator kind and count, else one
    GPU), with the figures of ``costs_file`` where it gives them."""
    plan = paper_plan(out, llms, data_dir, smoke=smoke)
    prediction = _predicted_cost(plan, device, hosts, devices_per_host, costs_file) if check else None
    found = checks.paper_checks(plan, llms, data_dir, paper_datasets(smoke), smoke=smoke)
    echo(format_plan(plan))
    if prediction is not None:
        echo(prediction)
    echo("checks:")
    for c in found:
        echo(c.line())
    missing = [c for c in found if not c.ok]
    if missing:
        echo(f"{len(missing)} thing(s) missing: " + "; ".join(c.what for c in missing) + " — nothing was run")
        return 1
    if check:
        echo("everything needed is here; run without --check (CHECK=1) to start")
        return 0
    return _run_and_summarise(plan, summary_only, echo)
