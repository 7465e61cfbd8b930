"""`cenas export RUN_DIR`: every candidate with its program, scores, lineage, error kind and degeneracy flags."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cenas_jax.store import CHECK, PROXY, RunStore

COLUMNS = ("id", "cycle", "idx", "attempt", "mode", "dataset", "parent_id", "verdict", "error_kind", "error_message",
           "nearest_id", "similarity", "quality", "accuracy", "seed_accuracies", "params", "flops", "compile_s",
           "train_s", "token_count", "finish_reason", "temperature", "degenerate", "source_hash", "source")
FORMATS = ("csv", "jsonl")


def export_rows(run_dir: Path) -> Iterator[dict[str, Any]]:
    """One dict per stored candidate, the latest proxy evaluation joined in (corpus rows: mode ``corpus``, cycle -1)."""
    with RunStore(run_dir, create=False) as s:
        # Every candidate of the store (run_id None), each with its latest evaluation whatever its status.
        evals = s.latest_evaluations(None, PROXY, ok=False)
        checks = s.latest_evaluations(None, CHECK, ok=False)
        reference: dict[str, float] = {}
        for run in s.runs():
            reference.update(s.reference_accuracies(run["id"]))
        rows = s.candidates()
    for r in rows:
        e, chk = evals.get(r["id"]), checks.get(r["id"])
        flags = e.degenerate if e is not None and e.degenerate is not None else chk.degenerate if chk else None
        accuracy = e.accuracy if e else None
        quality = r["quality"]
        if quality is None and r["cycle"] == -1 and accuracy is not None and reference.get(r["dataset"]):
            quality = accuracy / reference[r["dataset"]]  # stores written before the corpus got its Q
        yield {**r, "quality": quality, "accuracy": accuracy, "params": e.params if e else None,
               "flops": e.flops if e else None, "compile_s": e.compile_s if e else None,
               "train_s": e.train_s if e else None, "seed_accuracies": list(e.seed_accuracies) if e else [],
               "degenerate": None if flags is None else list(flags),
               "error_kind": r.get("error_kind") or (e.error_kind if e else None)}


def export_candidates(run_dir: Path, out: Path | None, fmt: str = "csv") -> int:
    """Write every candidate as CSV or JSON lines to ``out`` (None: standard output); returns the row count."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    rows = list(export_rows(run_dir))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    f = open(out, "w", newline="") if out is not None else sys.stdout
    try:
        if fmt == "csv":
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "seed_accuracies": " ".join(f"{x:.4f}" for x in r["seed_accuracies"]),
                            "degenerate": "" if r["degenerate"] is None else "; ".join(r["degenerate"]) or "none"})
        else:
            for r in rows:
                f.write(json.dumps({k: r.get(k) for k in COLUMNS}) + "\n")
    finally:
        if out is not None:
            f.close()
    return len(rows)


def export_csv(run_dir: Path, out: Path) -> int:
    """CSV to ``out``; returns the row count."""
    return export_candidates(run_dir, out, "csv")
