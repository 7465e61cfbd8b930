"""Fallback evaluator for the benchmark: the proxy trainer in a pool of single-threaded processes.

Used when ``cenas_jax.candidates.evaluator.Evaluator`` is unavailable. Same shape
as the sandbox pool (one single-threaded worker per core, workers load the
dataset once, candidates handed out as workers free up), without the isolation.
The sources are the benchmark's own trusted files, so they are exec'd directly.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import types
from typing import Any

_STATE: dict[str, Any] = {}


def _init_worker(cache_dir: str, data_cfg: dict, train_cfg: dict, ready: Any) -> None:
    # Before jax is imported: one XLA thread per process, the pool uses the cores.
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cenas_jax import hostmem  # as the sandbox workers do (DESIGN.md §3 "Pool scaling on CPU")

    hostmem.keep_freed_memory()
    from cenas_jax.config import DataConfig, TrainConfig, from_dict
    from cenas_jax.data import load_dataset
    from cenas_jax.train import enable_compile_cache

    cfg = from_dict(TrainConfig, train_cfg)
    enable_compile_cache(cfg, cache_dir=cache_dir)
    _STATE["cfg"] = cfg
    _STATE["dataset"] = load_dataset(from_dict(DataConfig, data_cfg))
    ready.wait()


def _train(task: tuple[str, str]) -> dict:
    import jax

    from cenas_jax.train import TrainError, train_candidate

    name, source = task
    t0 = time.perf_counter()
    # dataclasses (hence linen) look the defining module up in sys.modules
    module = types.ModuleType(f"bench_arch_{name}")
    sys.modules[module.__name__] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    net = module.Net(num_classes=int(_STATE["dataset"].num_classes))
    try:
        r = train_candidate(net, True, _STATE["dataset"], _STATE["cfg"], jax.random.key(0))
    except TrainError as e:
        return {"id": name, "status": "error", "error": e.kind, "wall_s": time.perf_counter() - t0}
    return {
        "id": name, "status": "ok", "accuracy": r.accuracy, "loss": r.loss, "compile_s": r.compile_s,
        "train_s": r.train_s, "strategy": r.strategy, "wall_s": time.perf_counter() - t0,
    }


class JaxPool:
    """``evaluate([(name, source)]) -> list[dict]`` in input order, on ``workers`` processes."""

    def __init__(self, workers: int, cache_dir: str, data_cfg: dict, train_cfg: dict) -> None:
        ctx = mp.get_context("spawn")
        ready = ctx.Barrier(workers + 1)
        self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(cache_dir, data_cfg, train_cfg, ready))
        ready.wait()  # every worker has imported jax and loaded the data

    def evaluate(self, tasks: list[tuple[str, str]]) -> list[dict]:
        out = {r["id"]: r for r in self.pool.imap_unordered(_train, tasks, chunksize=1)}
        return [out[name] for name, _ in tasks]

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
