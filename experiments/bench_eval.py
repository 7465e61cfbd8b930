"""Benchmark: proxy evaluation through the project's evaluator vs a plain PyTorch eager loop.

Run with ``make bench-eval``. Six architectures, written twice (Flax:
``bench/flax_archs/*.py``, PyTorch: ``bench/torch_archs.py``, same Flax-default
initialisation), trained on ``mnist5k``'s training split for 1 epoch at batch
64 with SGD (lr 0.01, momentum 0.9) and scored on its validation split, in
one invocation:

* ours: ``cenas_jax.candidates.evaluator.Evaluator`` (a pool of single-threaded,
  sandboxed workers, one per core; its workers keep the persistent
  compilation cache off, so every candidate compiles from nothing), or with
  ``--evaluator pool`` the trainer in a plain pool of single-threaded
  processes whose persistent compilation cache is a fresh, empty temp dir;
* PyTorch 2.13 eager, ``torch.set_num_threads(<all cores>)``, one model after
  another, data pre-normalised in memory (and, for reference only, once more
  with one thread: on a shared machine PyTorch's spinning OpenMP threads can
  make all-cores PyTorch much slower than one thread).

Both timings start with the process ready (PyTorch imported, the pool's
workers started with JAX imported and the data loaded) and include
everything per architecture: build, compile, train, evaluate. The pool's
start-up is printed separately (a search starts it once per run). The last
line is ``eval_speedup_vs_torch=<PyTorch wall / ours wall>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

ARCH_DIR = HERE / "bench" / "flax_archs"
# Longest first so that the pool does not end with one worker busy and the others idle.
ORDER = ("resnet", "vgg_bn", "cnn_dropout", "mobilenet", "lenet", "mlp")


def _train_cfg(epochs: float):
    from cenas_jax.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=64, optimizer="sgd", learning_rate=0.01, momentum=0.9, seeds=1)


def run_ours(kind: str, sources: dict[str, str], epochs: float, workers: int) -> tuple[list[dict], float, float, str]:
    """(per-arch dicts, start-up seconds, evaluation wall seconds, description)."""
    from cenas_jax.config import DataConfig, SandboxConfig, to_dict

    train_cfg = _train_cfg(epochs)
    if kind == "sandbox":
        from cenas_jax.candidates.evaluator import Evaluator
        from cenas_jax.candidates.records import Candidate

        t0 = time.perf_counter()
        ev = Evaluator(DataConfig(name="mnist5k"), train_cfg, SandboxConfig(workers=workers))
        ev.start(wait=True)  # every worker up: JAX imported, privileges dropped
        startup = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            records = ev.evaluate([Candidate(name, sources[name]) for name in ORDER])
            wall = time.perf_counter() - t1
        finally:
            ev.close()
        rows = [
            {"id": r.candidate_id, "status": r.status, "error": r.error_kind, "message": r.error_message,
             "accuracy": r.accuracy, "compile_s": r.compile_s, "train_s": r.train_s, "wall_s": r.wall_s}
            for r in records
        ]
        return rows, startup, wall, f"sandbox Evaluator, {ev.pool_size} workers ({ev.mode} isolation)"
    from bench.jax_pool import JaxPool

    cache_dir = tempfile.mkdtemp(prefix="cenas-bench-xla-")  # empty compilation cache
    t0 = time.perf_counter()
    pool = JaxPool(workers, cache_dir, "mnist5k", to_dict(train_cfg))
    startup = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        rows = pool.evaluate([(name, sources[name]) for name in ORDER])
        wall = time.perf_counter() - t1
    finally:
        pool.close()
    return rows, startup, wall, f"process pool, {workers} single-threaded workers, empty cache {cache_dir}"


def run_torch(epochs: int, threads: int) -> tuple[list[dict], float]:
    import torch
    from bench.torch_archs import TORCH_ARCHS
    from bench.torch_loop import to_tensors, train_torch

    from cenas_jax.config import DataConfig
    from cenas_jax.data import load_dataset

    torch.set_num_threads(threads)
    ds = load_dataset(DataConfig(name="mnist5k"))
    train, val = to_tensors(ds, "train"), to_tensors(ds, "val")
    h, _, c = ds.input_shape
    # Untimed warm-up (as the pool's start-up is untimed): start PyTorch's thread pool and kernels.
    warm = (train[0][:256], train[1][:256])
    train_torch(TORCH_ARCHS["lenet"], warm, warm, c, h, ds.num_classes)
    rows = []
    t0 = time.perf_counter()
    for name in ORDER:
        r = train_torch(TORCH_ARCHS[name], train, val, c, h, ds.num_classes, epochs=epochs)
        rows.append({"id": name, "accuracy": r.accuracy, "wall_s": r.wall_s})
    return rows, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", choices=("auto", "sandbox", "pool"), default="auto",
                    help="ours through the sandbox Evaluator, a plain process pool, or the Evaluator when importable")
    ap.add_argument("--workers", type=int, default=0, help="pool size (0: one per core)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--no-single-thread-reference", action="store_true",
                    help="skip the extra one-thread PyTorch run printed for reference")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    kind = args.evaluator
    if kind == "auto":
        try:
            import cenas_jax.candidates.evaluator  # noqa: F401 - imported only to see whether the sandbox is available

            kind = "sandbox"
        except ImportError:
            kind = "pool"
    sources = {name: (ARCH_DIR / f"{name}.py").read_text() for name in ORDER}

    ours, startup, ours_wall, how = run_ours(kind, sources, args.epochs, workers)
    theirs, torch_wall = run_torch(args.epochs, cores)
    # PyTorch's OpenMP threads spin while they wait for each other: on a machine that other
    # processes share, all-cores PyTorch can be far slower than one thread. Show both.
    _, torch1_wall = run_torch(args.epochs, 1) if cores > 1 and not args.no_single_thread_reference else (None, None)

    print(f"mnist5k, {args.epochs} epoch, batch 64, SGD lr 0.01 momentum 0.9; {cores} cores; load average "
          f"{os.getloadavg()[0]:.1f} (other processes on the machine slow both sides)")
    print(f"ours: {how}; start-up {startup:.1f} s (not in the ratio)")
    print(f"torch: eager, {cores} threads, one model after another")
    print(f"{'arch':<12} {'ours acc':>9} {'compile s':>10} {'train s':>8} {'wall s':>7} | {'torch acc':>9} {'wall s':>7}")
    for o, t in zip(ours, theirs):
        if o.get("status") != "ok":
            print(f"{o['id']:<12} {'ERROR ' + str(o.get('error')):>36} | {t['accuracy']:>9.3f} {t['wall_s']:>7.2f}"
                  f"   {str(o.get('message') or '')[:120]}")
            continue
        print(f"{o['id']:<12} {o['accuracy']:>9.3f} {o['compile_s']:>10.2f} {o['train_s']:>8.2f} {o['wall_s']:>7.2f} | "
              f"{t['accuracy']:>9.3f} {t['wall_s']:>7.2f}")
    ok = [o for o in ours if "error" not in o or not o.get("error")]
    if ok:
        over = [o["wall_s"] - o["train_s"] - o["compile_s"] for o in ok]
        print(f"per candidate: wall {sum(o['wall_s'] for o in ok) / len(ok):.2f} s, of it compile (tracing, export, "
              f"XLA) {sum(o['compile_s'] for o in ok) / len(ok):.2f} s, outside compile and train "
              f"(checks, processes, hand-offs) {sum(over) / len(over):.2f} s")
    print(f"total wall: ours {ours_wall:.2f} s (pool, per-arch times overlap), torch {torch_wall:.2f} s")
    print(f"with pool start-up: speedup {torch_wall / (ours_wall + startup):.2f}")
    if torch1_wall is not None:
        print(f"reference only: torch with 1 thread {torch1_wall:.2f} s, speedup vs that {torch1_wall / ours_wall:.2f}")
    print(f"eval_speedup_vs_torch={torch_wall / ours_wall:.2f}")


if __name__ == "__main__":
    main()
