"""The update phase of a cycle and the warm start: CE updates of the generator, and its checkpoints (DESIGN.md §1
step 7, §4).

- ``UpdatePhase.run(t)``: the CE update on S_t ∪ L: the elites' pairs, then the seed corpus L replayed with
  weight ``search.replay_weight``, within ``search.update_token_budget`` tokens; then the checkpoint
  ``checkpoints/cycle_{t:03d}``.
- ``UpdatePhase.warm_start()``: the end of the reference phase: the CE update on L alone (θ_0 fitted to the
  corpus), cached across runs under a key of what it depends on; then the checkpoint ``checkpoints/warm``.

The pairs themselves are built by ``search/update.py`` (pure: no store, no generator); this module reads what
they need from the store and drives the generator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cenas_jax.config import RunConfig, to_dict
from cenas_jax.errors import UserError
from cenas_jax.paths import shipped_warm_starts
from cenas_jax.rundir import REFERENCE_CYCLE
from cenas_jax.search import update as update_mod
from cenas_jax.search.generator import Generator, restore_checkpoint, save_checkpoint
from cenas_jax.search.stopping import StopControl
from cenas_jax.store import PROXY, RunStore

# Seconds per (training pair x pass) of the warm start with SmolLM2-135M on a 2-core CPU that other work
# shared (the quickstart's 36 pairs x 3 passes took about 9 min); used until this machine has measured its own.
WARM_START_S_PER_PAIR_PASS = 5.0


def replay_examples(cfg: RunConfig, corpus: Sequence[Any], n: int, seed_offset: int) -> list[tuple[Any, str]]:
    """n training pairs from the corpus L, in the modes the run samples (``update.replay_pairs``)."""
    s = cfg.search
    return update_mod.replay_pairs(corpus, n, seed=cfg.seed, seed_offset=seed_offset, mode=s.mode,
                                   delta_share=s.delta_share, dataset=cfg.data.name, edit_format=s.edit_format)


def warm_start_plan(cfg: RunConfig, corpus: Sequence[Any], fingerprint: str) -> tuple[list[tuple[Any, str]], str]:
    """The warm start's training pairs and its cache key (what a cached or shipped adapter must match)."""
    examples = replay_examples(cfg, corpus, len(corpus) * cfg.search.warm_start_epochs, seed_offset=0)
    key = update_mod.warm_start_key(examples, model=fingerprint, lora=to_dict(cfg.llm.lora),
                                    finetune=to_dict(cfg.llm.finetune), passes=cfg.search.warm_start_passes,
                                    learning_rate=cfg.search.warm_start_learning_rate)
    return examples, key


def warm_start_estimate(cache_dir: Path | None, fingerprint: str, pair_passes: int) -> tuple[float, str]:
    """Expected seconds of a warm start, and what the estimate rests on (this machine's last one, or the default)."""
    rate = None
    if cache_dir is not None:
        try:
            rate = float(json.loads((cache_dir / "timings.json").read_text())[fingerprint])
        except (OSError, ValueError, KeyError, TypeError):
            rate = None
    if rate is not None and rate > 0:
        return rate * pair_passes, "measured on this machine by the last warm start"
    return WARM_START_S_PER_PAIR_PASS * pair_passes, "estimate for a 2-core CPU with the 135M model"


def record_warm_start_time(cache_dir: Path | None, fingerprint: str, pair_passes: int, seconds: float) -> None:
    """Remember this machine's seconds per pair-pass for the next estimate (best effort: a cache, not a record)."""
    if cache_dir is None or pair_passes <= 0:
        return
    path = cache_dir / "timings.json"
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[fingerprint] = seconds / pair_passes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError:
        pass  # a read-only cache only loses the next estimate's accuracy


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def elite_inputs(store: RunStore, ids: Sequence[str]) -> list[update_mod.EliteInput]:
    """What ``update.elite_pairs`` needs of each elite, read from the store, in the order of ``ids`` (unknown ids
    are left out); a delta elite's parent comes with its latest successful proxy accuracy."""
    out = []
    for cid in ids:
        r = store.get_candidate(cid)
        if r is None:
            continue
        parent = store.get_candidate(r["parent_id"]) if r["mode"] == "delta" and r["parent_id"] else None
        parent_ev = store.latest_evaluation(parent["id"], PROXY) if parent is not None else None
        out.append(update_mod.EliteInput(
            id=r["id"], mode=r["mode"], dataset=r["dataset"], prompt=r["prompt"], source=r["source"],
            parent_source=parent["source"] if parent is not None else None,
            parent_dataset=parent["dataset"] if parent is not None else None,
            parent_accuracy=parent_ev.accuracy if parent_ev is not None else None))
    return out


@dataclass
class UpdatePhase:
    """Takes the CE updates of a run (``run``, ``warm_start``) and writes the generator's checkpoints."""

    cfg: RunConfig
    store: RunStore
    run_id: int
    generator: Generator
    corpus: Sequence[Any]  # CorpusEntry-like: .name, .source
    stop: StopControl
    checkpoints: Path  # the run directory's checkpoints/
    run_dir: Path  # named in the message about a damaged checkpoint
    echo: Callable[[str], None] = print
    progress: bool = True
    warm_cache_dir: Path | None = None  # warm starts cached across runs (None: no cache)

    def run(self, t: int) -> None:
        """Cycle ``t``'s CE update on its elites and the replayed corpus, then its checkpoint; its record (examples,
        steps, tokens, seconds, ``elites_as_full``) goes to the cycle's row."""
        if not self.cfg.search.ce_update:  # the frozen-LLM control: keep θ_0, still checkpoint the position
            save_checkpoint(self.generator, self.checkpoints / f"cycle_{t:03d}")
            self.store.set_cycle(self.run_id, t, update={"examples": 0, "steps": 0, "tokens": 0, "seconds": 0.0})
            return
        elites = self.store.cycle_elites(self.run_id, t)
        ids = list(elites.ids) if elites else []
        built = update_mod.elite_pairs(elite_inputs(self.store, ids), self.cfg.search.edit_format)
        for f in built.as_full:
            self.echo(f"cycle {t}: elite {f.id}'s edit from its parent cannot be written ({f.reason}); "
                      f"trained as a full program")
        examples = list(built.pairs)
        examples += self._replay_examples(update_mod.replay_count(len(examples), self.cfg.search.replay_weight),
                                          seed_offset=t + 1)
        examples = update_mod.within_budget(examples, self.cfg.search.update_token_budget, self._count_tokens())
        if self.progress and getattr(self.generator, "learns", True):
            self.echo(f"cycle {t}: CE update on {len(examples)} examples ({len(ids)} elites, the rest replayed corpus)")
        with self.stop.abandonable():
            res = self.generator.update(examples, seed=self.cfg.seed * 1000 + t)
        self.store.add_finetune_losses(self.run_id, t, res.losses)
        save_checkpoint(self.generator, self.checkpoints / f"cycle_{t:03d}")
        self.store.set_cycle(self.run_id, t, update={"examples": len(examples), "steps": res.steps, "tokens": res.tokens,
                                                       "seconds": res.seconds,
                                                       "elites_as_full": [f.id for f in built.as_full]})

    def warm_start(self) -> None:
        """θ_0: the CE update on the corpus L alone (reused from the cache when it holds it), then the checkpoint
        ``warm``. A generator that learns nothing, or ``search.warm_start`` off, only gets the checkpoint."""
        dest = self.checkpoints / "warm"
        if not self.cfg.search.warm_start or not getattr(self.generator, "learns", True):
            save_checkpoint(self.generator, dest)  # a generator that learns nothing (the mutation control) has no warm start
            return
        examples, key = warm_start_plan(self.cfg, self.corpus, self.generator.fingerprint)
        cache = (self.warm_cache_dir / key) if self.warm_cache_dir else None
        shipped_root = shipped_warm_starts()
        shipped = shipped_root / key if shipped_root is not None else None
        reused = False
        for source, what in ((cache, "cached"), (shipped, "shipped")):
            if reused or source is None or not (source / "COMPLETE").exists():
                continue
            try:
                restore_checkpoint(self.generator, source, self.run_dir)
                self.echo(f"warm start: reusing the {what} adapter {source} (made for this model, corpus and settings)")
                reused = True
            except UserError as e:  # a cache only: train it again
                self.echo(f"warm start: the {what} adapter is unusable ({e})")
        self.store.set_cycle(self.run_id, REFERENCE_CYCLE, warm_start={"key": key, "reused": reused})
        if not reused:
            passes = self.cfg.search.warm_start_passes or 1
            est, basis = warm_start_estimate(self.warm_cache_dir, self.generator.fingerprint, len(examples) * passes)
            where = f", then cached in {cache} for every later run with the same model, corpus and settings" if cache else ""
            self.echo(f"warm start: CE update on the corpus L ({len(examples)} examples"
                      + (f" x {passes} passes)" if passes > 1 else ")")
                      + f" -- done once{where}; expected about {_minutes(est)} ({basis})")
            t0 = time.time()
            with self.stop.abandonable():
                res = self.generator.update(examples, seed=self.cfg.seed, epochs=passes,
                                            learning_rate=self.cfg.search.warm_start_learning_rate)
            secs = time.time() - t0
            self.echo(f"warm start: done in {_minutes(secs)}")
            self.store.add_finetune_losses(self.run_id, -1, res.losses)
            if cache is not None:
                save_checkpoint(self.generator, cache)
                record_warm_start_time(self.warm_cache_dir, self.generator.fingerprint, len(examples) * passes, secs)
        save_checkpoint(self.generator, dest)

    def _replay_examples(self, n: int, seed_offset: int) -> list[tuple[Any, str]]:
        """n training pairs from the corpus L, in the modes the run samples (``update.replay_pairs``)."""
        return replay_examples(self.cfg, self.corpus, n, seed_offset)

    def _count_tokens(self) -> update_mod.CountTokens:
        """How the update's token budget counts a pair: the generator's tokenizer (``count_tokens``), or, for a
        generator without one (the scripted double, the mutation control), an estimate from characters."""
        return getattr(self.generator, "count_tokens", None) or update_mod.chars_estimate
