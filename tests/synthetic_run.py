"""A small synthetic run directory (config, state, store) for tests of what reads runs: retrain, reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from programs import mlp

from cenas_jax.config import RunConfig, from_dict, to_dict
from cenas_jax.rundir import LoopState, RunDir
from cenas_jax.store import CandidateRow, RunStore

ACTS = ("relu", "gelu", "tanh", "silu", "elu")


def make_run(
    path: Path,
    *,
    cycles: int = 3,
    per_cycle: int = 10,
    mode: str = "mixed",
    rate: dict[str, float] | None = None,
    tokens: dict[str, int] | None = None,
    q0: float = 0.8,
    slope: float = 0.03,
    novelty: bool = True,
    overrides: dict | None = None,
    seed: int = 0,
) -> Path:
    """A finished run: ``cycles`` × ``per_cycle`` generations, valid at ``rate[mode]``, Q rising by ``slope``/cycle."""
    rate = rate or {"full": 0.5, "delta": 0.75}
    tokens = tokens or {"full": 300, "delta": 90}
    rng = np.random.default_rng(seed)
    cfg_dict = {"seed": seed, "data": {"name": "digits"}, "train": {"epochs": 0.5},
                "search": {"cycles": cycles, "candidates_per_cycle": per_cycle, "mode": mode,
                           "novelty": {"enabled": novelty}}}
    for k, v in (overrides or {}).items():
        sec, key = k.split(".", 1)
        cfg_dict.setdefault(sec, {})
        if "." in key:
            sub, key2 = key.split(".")
            cfg_dict[sec].setdefault(sub, {})[key2] = v
        else:
            cfg_dict[sec][key] = v
    cfg = from_dict(RunConfig, cfg_dict)
    rd = RunDir(path)
    rd.create(cfg, {})
    with RunStore(path) as store:
        rid = store.create_run("main", to_dict(cfg))
        corpus = [("mlp_a", mlp(16)), ("mlp_b", mlp(24, "tanh")), ("mlp_c", mlp(32, "gelu", 2))]
        accs = [0.6, 0.7, 0.8]
        for i, ((name, src), acc) in enumerate(zip(corpus, accs)):
            cid = f"L-digits-{name}"
            store.add_candidate(CandidateRow(id=cid, source=src, run_id=rid, cycle=-1, idx=i, mode="corpus",
                                             dataset="digits"))
            store.add_evaluation(cid, {"status": "ok", "accuracy": acc, "seed_accuracies": [acc], "params": 1000 + i},
                                 budget="proxy", dataset="digits")
        store.set_cycle(rid, -1, reference={"digits": 0.7})
        n_delta = {"full": 0, "delta": per_cycle, "mixed": per_cycle // 2}[mode]
        k = 0
        for t in range(cycles):
            qs = []
            for i in range(per_cycle):
                m = "delta" if i < n_delta else "full"
                k += 1
                cid = f"s{seed}-c{t:03d}-{i:03d}-a0"
                src = mlp(8 + 4 * (k % 40), ACTS[k % 5], 1 + (k // 40) % 3)
                store.add_candidate(CandidateRow(id=cid, source=src, run_id=rid, cycle=t, idx=i, mode=m,
                                                 parent_id="L-digits-mlp_a" if m == "delta" else None,
                                                 dataset="digits", prompt="p", raw_text="r",
                                                 token_count=int(tokens[m] + rng.integers(-10, 10)),
                                                 finish_reason="eos", attempt=0, temperature=0.7))
                if rng.random() < rate[m]:
                    q = float(np.clip(q0 + slope * t + rng.normal(0, 0.05), 0.1, 1.4))
                    acc = q * 0.7
                    store.add_evaluation(cid, {"status": "ok", "accuracy": acc, "seed_accuracies": [acc],
                                               "params": 500 + k}, budget="proxy", dataset="digits")
                    store.update_candidate(cid, verdict="accepted", quality=q)
                    qs.append((q, cid))
                else:
                    kind = "delta_apply" if (m == "delta" and rng.random() < 0.5) else "syntax"
                    store.update_candidate(cid, verdict="invalid", error_kind=kind, error_message="synthetic")
            qs.sort(reverse=True)
            gamma = float(np.quantile([q for q, _ in qs], 0.75)) if qs else None
            store.set_cycle(rid, t, gamma=gamma, elites=[c for q, c in qs if gamma is not None and q >= gamma])
            store.add_timing(rid, t, "generate", 10.0)
        store.set_run_status(rid, "finished")
    rd.save_state(LoopState(cycle=cycles, phase="done", status="finished"))
    return path
