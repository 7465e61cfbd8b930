"""Checks that need no model: run before `cenas run` / `cenas resume` load the LLM (seconds to minutes).

A typo in ``data.name``, a missing dataset directory, an unknown corpus program or a model
path that does not exist fails here in well under a second, before a run directory is
written, instead of after the LLM has loaded and left a failed run behind.

The data catalog, the loop, the store and the LLM weights are imported by the checks that need them:
``cenas run`` refuses an existing run directory before it pays for numpy, scipy or JAX.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import yaml

from cenas_jax.config import RunConfig, apply_overrides, from_dict, to_dict
from cenas_jax.errors import UserError
from cenas_jax.rundir import RunDir, lock_holder, write_atomic


def check_inputs(cfg: RunConfig) -> None:
    """Every dataset of the pool is available, the corpus selection exists, the model can be found, the
    sandbox's backend can be used."""
    from cenas_jax.candidates.backends import check_backend
    from cenas_jax.data.catalog import check_available
    from cenas_jax.search.loop import select_corpus

    for name in dict.fromkeys([cfg.data.name, *cfg.search.datasets]):
        try:
            check_available(dataclasses.replace(cfg.data, name=name))
        except UserError as e:
            key = "data.name" if name == cfg.data.name else "search.datasets"
            raise UserError(f"{key}: {e}") from None
    if not select_corpus(cfg.search):
        raise UserError("search.corpus: the seed corpus is empty")
    check_backend(cfg.sandbox)
    if cfg.search.generator != "mutation":
        from cenas_jax.llm.weights import resolve_model_path

        try:
            resolve_model_path(cfg.llm.model.name)
        except UserError as e:
            raise UserError(f"llm.model.name: {e}") from None


def run_status(rd: RunDir) -> str:
    """The state.json status of an existing run directory ("unreadable" when it cannot be read).

    A run marked "running" whose lock nobody holds was killed (kill -9, a lost machine): "interrupted".
    """
    try:
        status = rd.load_state().status
    except UserError:
        return "unreadable"
    if status == "running" and lock_holder(rd.path) is None:
        return "interrupted"
    return status


# A run in these states may be replaced by `cenas run --force`. A "running" run is a live process (its
# lock is held: never removed); one killed with -9 reads as "interrupted" (see run_status).
REPLACEABLE = ("finished", "failed", "interrupted", "unreadable")


def check_new_run_dir(rd: RunDir, force: bool) -> str | None:
    """Refuse an occupied run directory unless ``force`` and its run is replaceable; returns the status found."""
    if not rd.exists():
        return None
    status = run_status(rd)
    if not force:
        raise UserError(f"{rd.path} already holds a {status} run; `cenas resume {rd.path}` continues it, "
                        f"`cenas run ... --force` replaces it, or choose another --run-dir")
    holder = lock_holder(rd.path)
    if holder is not None:
        raise UserError(f"{rd.path} is in use by {holder}; --force never replaces a live run")
    if status not in REPLACEABLE:
        raise UserError(f"{rd.path} holds a run marked {status!r}; --force replaces only "
                        f"{', '.join(REPLACEABLE)} runs — resume it with `cenas resume {rd.path}` or remove it by hand")
    return status


def replace_run_dir(rd: RunDir, status: str, echo=print) -> list[Path]:
    """Delete the run in ``rd`` (its files only, not foreign ones), saying what goes; returns what was removed."""
    names = ("config.yaml", "manifest.json", "state.json", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm",
             "checkpoints", "report", "candidates.csv")
    gone = [rd.path / n for n in names if (rd.path / n).exists()]
    n_cand = _count_candidates(rd)
    echo(f"--force: replacing the {status} run in {rd.path}: removing "
         + ", ".join(p.name + ("/" if p.is_dir() else "") for p in gone)
         + (f" ({n_cand} recorded candidates)" if n_cand is not None else ""))
    for p in gone:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)  # (SQLite's -wal/-shm may go with the store)
    return gone


def _count_candidates(rd: RunDir) -> int | None:
    if not (rd.path / "store.sqlite").exists():
        return None
    from cenas_jax.store import RunStore

    try:
        with RunStore(rd.path, create=False) as s:
            return sum(1 for _ in s.candidates())
    except Exception:  # a damaged store is removed all the same; the count is only informative
        return None


def resume_overrides(rd: RunDir, overrides: list[str]) -> tuple[RunConfig, list[dict]]:
    """The stored config with ``--set`` overrides applied, and the changes (key, old, new) they make."""
    old = rd.load_config()
    if not overrides:
        return old, []
    new = from_dict(RunConfig, apply_overrides(to_dict(old), overrides))
    changes = _diff(to_dict(old), to_dict(new))
    return new, changes


def _diff(a: dict, b: dict, prefix: str = "") -> list[dict]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, key + ".")
        elif va != vb:
            out.append({"key": key, "old": va, "new": vb})
    return out


# What the runs's recorded results depend on: changing these once the corpus has been trained
# would mix two experiments in one store.
_FROZEN_AFTER_REFERENCE = ("seed", "data.", "train.", "search.corpus", "search.datasets", "search.mode",
                           "search.edit_format", "search.candidates_per_cycle", "llm.model.")


def check_resume_changes(state, changes: list[dict]) -> None:
    """Refuse changes to what recorded results depend on, unless the run has recorded none (still in ``reference``)."""
    if state.phase == "reference" and state.cycle == 0:
        return
    bad = [c["key"] for c in changes if any(c["key"] == f or (f.endswith(".") and c["key"].startswith(f))
                                            or c["key"].startswith(f + ".") for f in _FROZEN_AFTER_REFERENCE)]
    if bad:
        raise UserError(f"cannot change {', '.join(bad)} on resume: the run has results that depend on "
                        f"{'it' if len(bad) == 1 else 'them'} (at cycle {state.cycle}, phase {state.phase}); "
                        "start a new run (cenas run ... --force replaces this one)")


def record_changes(rd: RunDir, cfg: RunConfig, changes: list[dict]) -> None:
    """Write the changed config to config.yaml and append the change to manifest.json's ``config_changes``."""
    manifest = rd.manifest()
    manifest.setdefault("config_changes", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "changes": changes})
    manifest["config"] = to_dict(cfg)
    write_atomic(rd.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    write_atomic(rd.manifest_path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
