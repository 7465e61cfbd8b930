"""What the live view and the HTML report show, as JSON-ready dicts read from run directories.

Every reader opens the store without creating or upgrading it (``RunStore(create=False, migrate=False)``;
a WAL reader never blocks the run's writer) and never writes. Text that came from a candidate or the LLM (code, prompts, answers, error
messages) is passed through as data; the page puts it into the DOM as text, never as HTML.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any

from cenas_jax.errors import UserError
from cenas_jax.programs import clean_program
from cenas_jax.proxy_snr.experiment import RESULT_JSON
from cenas_jax.report.analysis import RunAnalysis, analyse, beats_corpus, lineage_chain
from cenas_jax.report.markdown import theory_rows
from cenas_jax.store import CHECK, PROXY, STORE_FILENAME, RunStore

PHASES = ("generate", "train", "select", "update")


def run_names(run_dirs: list[str | Path]) -> dict[str, Path]:
    """A unique, URL-safe name per run directory: its base name, then ``parent-name``, then a counter."""
    out: dict[str, Path] = {}
    for d in run_dirs:
        p = Path(d).resolve()
        for cand in (p.name, f"{p.parent.name}-{p.name}"):
            name = _slug(cand)
            if name and name not in out:
                break
        else:
            k = 2
            while f"{_slug(p.name)}-{k}" in out:
                k += 1
            name = f"{_slug(p.name)}-{k}"
        out[name] = p
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text).strip(".-") or "run"


def version(run_dir: Path) -> str:
    """Changes whenever the run records something (store, its WAL, state.json): the page re-reads then."""
    parts = []
    for f in (STORE_FILENAME, STORE_FILENAME + "-wal", "state.json"):
        try:
            st = os.stat(run_dir / f)
            parts.append(f"{st.st_mtime_ns:x}.{st.st_size:x}")
        except OSError:
            parts.append("-")
    return "/".join(parts)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def run_summary(name: str, run_dir: Path) -> dict[str, Any]:
    """One line of ``/api/runs``: the run's name, status, position and size; ``error`` when it cannot be read."""
    base: dict[str, Any] = {"name": name, "path": str(run_dir), "version": version(run_dir)}
    try:
        a = analyse(run_dir, migrate=False)
    except (UserError, OSError) as e:
        return {**base, "status": "damaged", "error": str(e)}
    s = a.config.get("search", {})
    return {**base, "status": a.status, "cycle": a.position[0] if a.position else None,
            "phase": a.position[1] if a.position else None, "cycles_planned": a.cycles_planned,
            "cycles_completed": a.cycles_completed, "candidates_per_cycle": s.get("candidates_per_cycle"),
            "mode": s.get("mode"), "generator": s.get("generator"),
            "model": (a.config.get("llm") or {}).get("model", {}).get("name"),
            "dataset": (a.config.get("data") or {}).get("name"),
            "novelty": (s.get("novelty") or {}).get("enabled", True),
            "generated": sum(c.generated for c in a.cycles),
            "best_q": max((c.best_so_far for c in a.cycles if c.best_so_far is not None), default=None)}


def run_detail(name: str, run_dir: Path) -> dict[str, Any]:
    """Everything the run's page draws: progress, per-cycle statistics, the theory table, the baseline."""
    a = analyse(run_dir, migrate=False)
    summary = run_summary(name, run_dir)
    with RunStore(run_dir, create=False, migrate=False) as store:
        run = store.get_run("main")
        timings = store.timings(run["id"]) if run else {}
        current, trained = [], 0
        if a.position is not None and run:
            current = store.candidates(run_id=run["id"], cycle=a.position[0])
            trained = len(store.trained_candidates(run["id"], cycle=a.position[0]))
    progress = None
    if a.position is not None:
        per = summary.get("candidates_per_cycle") or 0
        progress = {"cycle": a.position[0], "phase": a.position[1],
                    "phase_index": PHASES.index(a.position[1]) if a.position[1] in PHASES else None,
                    "generated": len({r["idx"] for r in current}), "slots": per,
                    "checked": sum(r["verdict"] is not None for r in current),  # NULL: not checked yet
                    "trained": trained}
    return {
        **summary,
        "progress": progress,
        "reference": a.reference,
        "corpus_best_q": _num(a.corpus_best_q),
        "corpus": [{"name": c["name"], "dataset": c["dataset"], "accuracy": _num(c["accuracy"]),
                    "quality": _num(c["quality"]), "params": c["params"]} for c in a.corpus],
        "cycles": [_cycle(c, timings.get(c.cycle, {})) for c in a.cycles],
        "modes": {m: {k: d[k] for k in ("generated", "valid", "rate", "low", "high", "mean_tokens", "unchecked")}
                  | {"per_cycle": {str(t): v for t, v in d["per_cycle"].items()}} for m, d in a.modes.items()},
        "elite_mass": _elite_mass(a),
        "theory": [{"result": r, "ours": o, "paper": p} for r, o, p in theory_rows(a)],
        "finetune_losses": {str(t): [_num(x) for x in ls] for t, ls in sorted(a.finetune_losses.items())},
    }


def _cycle(c: Any, timing: dict[str, float]) -> dict[str, Any]:
    return {"cycle": c.cycle, "generated": c.generated, "unchecked": c.unchecked, "valid": c.valid,
            "accepted": c.accepted, "duplicates": c.duplicates, "trained": c.trained, "complete": c.complete,
            "mean_q": _num(c.mean_q), "q_low": _num(c.q_low), "q_high": _num(c.q_high), "best_q": _num(c.best_q),
            "best_so_far": _num(c.best_so_far), "gamma": _num(c.gamma), "elites": len(c.elites),
            "diversity": _num(c.diversity), "distinct_structures": c.distinct_structures,
            "beats_corpus": c.beats_corpus, "degenerate": c.degenerate, "error_kinds": c.error_kinds,
            "seconds": _num(c.seconds), "phases": {k: _num(v) for k, v in timing.items()}}


def _elite_mass(a: RunAnalysis) -> dict[str, Any] | None:
    ec = a.elite_check
    if ec is None:
        return None
    return {"rho0": _num(ec.rho0), "mass": [_num(x) for x in ec.mass], "bound": [_num(x) for x in ec.bound],
            "low": [_num(x) for x in ec.low], "high": [_num(x) for x in ec.high]}


def candidates(run_dir: Path) -> list[dict[str, Any]]:
    """Every generation and corpus program of the run, one flat row each (no source text: see ``candidate``)."""
    a = analyse(run_dir, migrate=False)
    with RunStore(run_dir, create=False, migrate=False) as store:
        run = store.get_run("main")
        if run is None:
            return []
        rows = store.candidates(run_id=run["id"])
        # Each candidate's latest evaluation of each kind, whatever its status.
        proxy = {cid: e.to_dict() for cid, e in store.latest_evaluations(run["id"], PROXY, ok=False).items()}
        checks = {cid: e.to_dict() for cid, e in store.latest_evaluations(run["id"], CHECK, ok=False).items()}
    out = []
    for r in rows:
        e = proxy.get(r["id"]) or {}
        chk = checks.get(r["id"]) or {}
        v = beats_corpus(r, e or None, a.corpus_best, a.noise) if r["quality"] is not None else None
        out.append({
            "id": r["id"], "cycle": r["cycle"], "slot": r["idx"], "attempt": r["attempt"], "mode": r["mode"],
            "dataset": r["dataset"], "parent": r["parent_id"],
            "verdict": r["verdict"] or ("corpus" if r["mode"] == "corpus" else "unchecked"),
            "error_kind": r["error_kind"] or e.get("error_kind") or chk.get("error_kind"),
            "quality": _num(r["quality"] if r["quality"] is not None else a.lineage.get(r["id"], {}).get("quality")),
            "accuracy": _num(e.get("accuracy")), "params": e.get("params") or chk.get("params"),
            "flops": _num(e.get("flops") or chk.get("flops")), "tokens": r["token_count"],
            "degenerate": bool(e.get("degenerate") or chk.get("degenerate")),
            "beats_corpus": None if v is None else v.get("beats"),
        })
    return out


def candidate(run_dir: Path, candidate_id: str, analysis: RunAnalysis | None = None,
              store: RunStore | None = None) -> dict[str, Any] | None:
    """One candidate in full: its code, the diff to its parent, lineage, prompt, raw answer, errors, seeds.

    ``analysis`` and an open ``store`` may be passed when many candidates are read at once."""
    if store is None:
        with RunStore(run_dir, create=False, migrate=False) as s:
            return candidate(run_dir, candidate_id, analysis, s)
    r = store.get_candidate(candidate_id)
    run = store.get_run("main")
    if r is None or run is None or r["run_id"] != run["id"]:
        return None
    parent = store.get_candidate(r["parent_id"]) if r["parent_id"] else None
    evals = store.evaluations(candidate_id)
    if analysis is None:
        lineage = [r["id"]]
        cur = r["parent_id"]
        while cur is not None and cur not in lineage:
            lineage.append(cur)
            p = store.get_candidate(cur)
            cur = p["parent_id"] if p else None
    else:
        lineage = lineage_chain(analysis, r["id"])
    diff = None
    if parent is not None:
        # Against the parent as the prompt showed it (no docstrings or comments): the edit the LLM made.
        shown = clean_program(parent["source"])
        diff = "".join(difflib.unified_diff(shown.splitlines(keepends=True),
                                            (r["source"] or "").splitlines(keepends=True),
                                            fromfile=f"{parent['id']} (as the prompt showed it)", tofile=r["id"]))
    return {
        "id": r["id"], "cycle": r["cycle"], "slot": r["idx"], "attempt": r["attempt"], "mode": r["mode"],
        "dataset": r["dataset"], "parent": r["parent_id"], "verdict": r["verdict"], "error_kind": r["error_kind"],
        "error_message": r.get("error_message"), "quality": _num(r["quality"]), "temperature": _num(r["temperature"]),
        "tokens": r["token_count"], "finish_reason": r["finish_reason"], "nearest": r.get("nearest_id"),
        "similarity": _num(r.get("similarity")), "source": r["source"], "prompt": r["prompt"],
        "raw_text": r["raw_text"], "diff": diff, "lineage": lineage,
        "evaluations": [{"budget": e["budget"], "status": e["status"], "stage": e["stage"],
                         "error_kind": e["error_kind"], "error_message": e.get("error_message"),
                         "accuracy": _num(e["accuracy"]), "params": e["params"], "flops": _num(e["flops"]),
                         "seed_accuracies": [_num(x) for x in e.get("seed_accuracies") or []],
                         "degenerate": e.get("degenerate"), "train_s": _num(e["train_s"])} for e in evals],
    }


def proxy_snr(name: str, out_dir: Path) -> dict[str, Any]:
    """A ``cenas proxy-snr`` result (its ``proxy_snr.json``): the SNR and each predicted against measured ρ_S."""
    base: dict[str, Any] = {"name": name, "path": str(out_dir)}
    try:
        doc = json.loads((out_dir / RESULT_JSON).read_text())
        a = doc["analysis"]
        snr = a["snr"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {**base, "error": f"{out_dir / RESULT_JSON}: unreadable ({e})"}

    def ci(x: Any) -> list[float | None] | None:
        return [_num(v) for v in x] if isinstance(x, (list, tuple)) and len(x) == 2 else None

    comps = []
    for key, c in (a.get("comparisons") or {}).items():
        m = c.get("measured") or {}
        comps.append({"name": key, "description": c.get("description"), "predicted": _num(c.get("predicted")),
                      "predicted_ci": ci(c.get("predicted_ci")), "expected_at_k": _num(c.get("expected_at_k")),
                      "measured": _num(m.get("estimate")), "measured_ci": [_num(m.get("ci_low")), _num(m.get("ci_high"))]
                      if m else None, "p_value": _num(m.get("p_value")), "error": c.get("measured_error")})
    return {**base, "source": doc.get("source"), "proxy_epochs": doc.get("proxy_epochs"),
            "truth_epochs": doc.get("truth_epochs"), "K": snr.get("K"), "S": snr.get("S"),
            "snr": _num(snr.get("snr")), "snr_ci": ci(snr.get("snr_ci")), "sigma2_arch": _num(snr.get("sigma2_arch")),
            "sigma2_noise": _num(snr.get("sigma2_noise")), "comparisons": comps,
            "failures": len(doc.get("failures") or [])}
