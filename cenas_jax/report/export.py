"""`cenas export RUN_DIR --csv`: every candidate with its scores, lineage and error kind."""

from __future__ import annotations

import csv
from pathlib import Path

from cenas_jax.store import RunStore

COLUMNS = ("id", "cycle", "idx", "attempt", "mode", "dataset", "parent_id", "verdict", "error_kind", "error_message",
           "nearest_id", "similarity", "quality", "accuracy", "seed_accuracies", "params", "flops", "compile_s",
           "train_s", "token_count", "finish_reason", "temperature", "source_hash")


def export_csv(run_dir: Path, out: Path) -> int:
    """Write one CSV row per stored candidate (the latest proxy evaluation joined in); returns the row count."""
    with RunStore(run_dir, create=False) as s:
        evals = {}
        for e in s.evaluations(budget="proxy"):
            evals[e["candidate_id"]] = e
        rows = s.candidates()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            e = evals.get(r["id"], {})
            w.writerow({**r, "accuracy": e.get("accuracy"), "params": e.get("params"), "flops": e.get("flops"),
                        "compile_s": e.get("compile_s"), "train_s": e.get("train_s"),
                        "seed_accuracies": " ".join(f"{x:.4f}" for x in e.get("seed_accuracies") or []),
                        "error_kind": r.get("error_kind") or e.get("error_kind")})
    return len(rows)
