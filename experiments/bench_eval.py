"""Benchmark: proxy evaluation through the project's evaluator vs a plain PyTorch eager loop.

Run with ``make bench-eval``. Six architectures, written twice (Flax:
``bench/flax_archs/*.py``, PyTorch: ``bench/torch_archs.py``, same Flax-default
initialisation), trained for 1 epoch at batch 64 with SGD (lr 0.01, momentum
0.9) and scored on the validation split, in two regimes:

* small: ``mnist5k``'s training split (3,500 digits, 54 steps), 1 seed per
  architecture: compile time weighs as much as training;
* paper: a CIFAR-10-sized training set, 50,000 images of 32x32x3 (781 steps),
  3 seeds per architecture (``--seeds``). The images are mnist5k digits
  padded, tiled over three channels and randomly shifted
  (``bench/cifar_shaped.py``), or CIFAR-10's own with ``--data-dir`` (a
  directory holding ``cifar-10-batches-py``; its test batch is then the
  validation split, so that all 50,000 training images train). The set is
  written once as a CIFAR-10 directory under ``<out>/data`` (the sandbox's
  workers load their dataset through the data layer, not from memory) and
  reused by later runs.

Each regime, in one invocation:

* ours: ``cenas_jax.candidates.evaluator.Evaluator`` (a pool of single-threaded,
  sandboxed workers, one per core; its workers keep the persistent
  compilation cache off, so every candidate compiles from nothing), or with
  ``--evaluator pool`` the trainer in a plain pool of single-threaded
  processes whose persistent compilation cache is a fresh, empty temp dir;
* PyTorch 2.13 eager, ``torch.set_num_threads(<all cores>)``, one model (and
  seed) after another, data pre-normalised in memory (and, for reference only,
  once more with one thread: on a shared machine PyTorch's spinning OpenMP
  threads can make all-cores PyTorch much slower than one thread).

Both timings start with the process ready (PyTorch imported; the pool's
workers started with JAX imported and the data loaded: one untimed tiny net
per worker loads it) and include everything per architecture and seed: build,
compile, train, evaluate. The pool's start-up is printed separately (a search
starts it once per run). The machine, its limits and the load average are
printed first: take figures on an idle machine. The last two lines are read by
scripts: ``eval_speedup_vs_torch_small=`` and then ``eval_speedup_vs_torch=``
(the paper regime), each PyTorch wall / ours wall. ``--quick``: 2
architectures, 1 seed, 100 steps in the paper regime (a check that it runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cenas_jax.config import DataConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

ARCH_DIR = HERE / "bench" / "flax_archs"
# Longest first so that the pool does not end with one worker busy and the others idle.
ORDER = ("resnet", "vgg_bn", "cnn_dropout", "mobilenet", "lenet", "mlp")
QUICK_ARCHS = ("lenet", "mlp")
QUICK_STEPS = 100
PAPER_SEEDS = 3
PAPER_TIMEOUT_S = 3600.0  # per candidate: 3 seeds of 781 ResNet steps take minutes on a busy core


@dataclasses.dataclass(frozen=True)
class Regime:
    name: str  # "small" | "paper"
    title: str
    data_cfg: DataConfig
    seeds: int
    timeout_s: float | None  # the sandbox's per-candidate wall clock (None: its default)


def _train_cfg(epochs: float, seeds: int):
    from cenas_jax.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=64, optimizer="sgd", learning_rate=0.01, momentum=0.9, seeds=seeds)


def _warm_source() -> str:
    from cenas_jax.candidates.worker import WARMUP_SOURCE

    return WARMUP_SOURCE


def run_ours(kind: str, sources: dict[str, str], archs: tuple[str, ...], regime: Regime, epochs: float,
             workers: int) -> tuple[list[dict], float, float, str]:
    """(per-arch dicts, start-up seconds, evaluation wall seconds, description)."""
    from cenas_jax.config import SandboxConfig, to_dict

    train_cfg = _train_cfg(epochs, regime.seeds)
    if kind == "sandbox":
        from cenas_jax.candidates.evaluator import Evaluator
        from cenas_jax.candidates.records import Candidate

        sandbox = SandboxConfig(workers=workers)
        if regime.timeout_s is not None:
            sandbox = dataclasses.replace(sandbox, timeout_s=regime.timeout_s)
        t0 = time.perf_counter()
        ev = Evaluator(regime.data_cfg, train_cfg, sandbox)
        ev.start(wait=True)  # every worker up: JAX imported, privileges dropped
        # one tiny net per worker: the dataset exported by the parent and loaded by every worker
        warm = ev.evaluate([Candidate(f"warm-up-{i}", _warm_source()) for i in range(ev.pool_size)])
        startup = time.perf_counter() - t0
        bad = [r for r in warm if not r.ok]
        if bad:
            raise SystemExit(f"bench-eval: the warm-up net failed in the sandbox: {bad[0].error_kind}: {bad[0].error_message}")
        try:
            t1 = time.perf_counter()
            records = ev.evaluate([Candidate(name, sources[name]) for name in archs])
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
    pool = JaxPool(workers, cache_dir, to_dict(regime.data_cfg), to_dict(train_cfg))
    startup = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        rows = pool.evaluate([(name, sources[name]) for name in archs])
        wall = time.perf_counter() - t1
    finally:
        pool.close()
    return rows, startup, wall, f"process pool, {workers} single-threaded workers, empty cache {cache_dir}"


def run_torch(archs: tuple[str, ...], regime: Regime, epochs: float, threads: int) -> tuple[list[dict], float]:
    """PyTorch eager on the regime's data: every architecture, every seed, one after another."""
    import torch
    from bench.torch_archs import TORCH_ARCHS
    from bench.torch_loop import to_tensors, train_torch

    from cenas_jax.data import load_dataset

    torch.set_num_threads(threads)
    ds = load_dataset(regime.data_cfg)
    train, val = to_tensors(ds, "train"), to_tensors(ds, "val")
    h, _, c = ds.input_shape
    # Untimed warm-up (as the pool's start-up is untimed): start PyTorch's thread pool and kernels.
    warm = (train[0][:256], train[1][:256])
    train_torch(TORCH_ARCHS["lenet"], warm, warm, c, h, ds.num_classes)
    rows = []
    t0 = time.perf_counter()
    for name in archs:
        runs = [train_torch(TORCH_ARCHS[name], train, val, c, h, ds.num_classes, epochs=epochs, seed=s)
                for s in range(regime.seeds)]
        rows.append({"id": name, "accuracy": sum(r.accuracy for r in runs) / len(runs),
                     "wall_s": sum(r.wall_s for r in runs)})
    return rows, time.perf_counter() - t0


def report(regime: Regime, steps: int, ours: list[dict], startup: float, ours_wall: float, how: str,
           theirs: list[dict], torch_wall: float, torch1_wall: float | None, cores: int) -> float:
    """Print one regime's table; return PyTorch wall / ours wall."""
    print(f"\n== {regime.name}: {regime.title}; {steps} steps per epoch, {regime.seeds} seed(s) per architecture; "
          f"load average now {os.getloadavg()[0]:.2f}")
    print(f"ours: {how}; start-up {startup:.1f} s (not in the ratio)")
    print(f"torch: eager, {cores} threads, one model and seed after another")
    print(f"{'arch':<12} {'ours acc':>9} {'compile s':>10} {'train s':>8} {'wall s':>7} | {'torch acc':>9} {'wall s':>7}")
    for o, t in zip(ours, theirs):
        if o.get("status") != "ok":
            print(f"{o['id']:<12} {'ERROR ' + str(o.get('error')):>36} | {t['accuracy']:>9.3f} {t['wall_s']:>7.2f}"
                  f"   {str(o.get('message') or '')[:120]}")
            continue
        print(f"{o['id']:<12} {o['accuracy']:>9.3f} {o['compile_s']:>10.2f} {o['train_s']:>8.2f} {o['wall_s']:>7.2f} | "
              f"{t['accuracy']:>9.3f} {t['wall_s']:>7.2f}")
    ok = [o for o in ours if o.get("status") == "ok"]
    if ok:
        over = [o["wall_s"] - o["train_s"] - o["compile_s"] for o in ok]
        print(f"per candidate: wall {sum(o['wall_s'] for o in ok) / len(ok):.2f} s, of it compile (tracing, export, "
              f"XLA) {sum(o['compile_s'] for o in ok) / len(ok):.2f} s, outside compile and train "
              f"(checks, processes, hand-offs) {sum(over) / len(over):.2f} s")
    print(f"total wall: ours {ours_wall:.2f} s (pool, per-arch times overlap), torch {torch_wall:.2f} s")
    print(f"with pool start-up: speedup {torch_wall / (ours_wall + startup):.2f}")
    if torch1_wall is not None:
        print(f"reference only: torch with 1 thread {torch1_wall:.2f} s, speedup vs that {torch1_wall / ours_wall:.2f}")
    return torch_wall / ours_wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regime", choices=("small", "paper", "both"), default="both",
                    help="mnist5k with 1 seed, the paper's CIFAR-10-sized epoch with 3 seeds, or both (default)")
    ap.add_argument("--data-dir", default=None,
                    help="paper regime: a directory holding CIFAR-10's cifar-10-batches-py (default: made from mnist5k)")
    ap.add_argument("--archs", default=None, help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--seeds", type=int, default=None, help=f"paper regime: seeds per architecture (default {PAPER_SEEDS})")
    ap.add_argument("--quick", action="store_true",
                    help=f"a check that it runs: {' and '.join(QUICK_ARCHS)}, 1 seed, {QUICK_STEPS} steps in the paper regime")
    ap.add_argument("--out", default="runs/bench-eval", help="where the paper regime's dataset is written once and reused")
    ap.add_argument("--evaluator", choices=("auto", "sandbox", "pool"), default="auto",
                    help="ours through the sandbox Evaluator, a plain process pool, or the Evaluator when importable")
    ap.add_argument("--workers", type=int, default=0, help="pool size (0: one per core)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--no-single-thread-reference", action="store_true",
                    help="skip the extra one-thread PyTorch run printed for reference")
    args = ap.parse_args(argv)
    archs = tuple(a for a in args.archs.split(",") if a) if args.archs else (QUICK_ARCHS if args.quick else ORDER)
    unknown = [a for a in archs if a not in ORDER]
    if unknown or not archs:
        ap.error(f"--archs: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(ORDER)}")
    archs = tuple(a for a in ORDER if a in archs)  # longest first
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else PAPER_SEEDS)
    if seeds < 1:
        ap.error("--seeds must be >= 1")
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    kind = args.evaluator
    if kind == "auto":
        try:
            import cenas_jax.candidates.evaluator  # noqa: F401 - imported only to see whether the sandbox is available

            kind = "sandbox"
        except ImportError:
            kind = "pool"

    import jax
    import torch
    from bench.machine import machine_line

    print(machine_line(), flush=True)
    print(f"jax {jax.__version__}, torch {torch.__version__}; ours: {kind}, {workers} workers", flush=True)

    from cenas_jax.config import DataConfig

    regimes = []
    if args.regime in ("small", "both"):
        regimes.append(Regime("small", "mnist5k (28x28x1, 3,500 training digits)", DataConfig(name="mnist5k"), 1, None))
    if args.regime in ("paper", "both"):
        from bench.cifar_shaped import CIFAR_TRAIN, paper_data_config

        n_train = QUICK_STEPS * 64 if args.quick else CIFAR_TRAIN
        from cenas_jax.errors import UserError

        t0 = time.perf_counter()
        try:
            data_cfg, built = paper_data_config(Path(args.out) / "data", data_dir=args.data_dir, n_train=n_train)
        except (UserError, ValueError) as e:  # e.g. --data-dir without cifar-10-batches-py under it
            print(f"bench-eval: {e}", file=sys.stderr)
            return 2
        what = "CIFAR-10 from " + args.data_dir if args.data_dir else "mnist5k digits padded, tiled and shifted to 32x32x3"
        print(f"paper regime data: {what}, {n_train:,} training images; "
              f"{'written' if built else 'reused'} {data_cfg.data_dir} ({time.perf_counter() - t0:.1f} s)", flush=True)
        regimes.append(Regime("paper", f"{what}, {n_train:,} training images", data_cfg, seeds, PAPER_TIMEOUT_S))

    sources = {name: (ARCH_DIR / f"{name}.py").read_text() for name in archs}
    ratios = {}
    for regime in regimes:
        from cenas_jax.data import load_dataset

        n_train = len(load_dataset(regime.data_cfg).y_train)
        ours, startup, ours_wall, how = run_ours(kind, sources, archs, regime, args.epochs, workers)
        theirs, torch_wall = run_torch(archs, regime, args.epochs, cores)
        # PyTorch's OpenMP threads spin while they wait for each other: on a machine that other
        # processes share, all-cores PyTorch can be far slower than one thread. Show both.
        torch1_wall = None
        if cores > 1 and not args.no_single_thread_reference:
            _, torch1_wall = run_torch(archs, regime, args.epochs, 1)
        ratios[regime.name] = report(regime, n_train // 64, ours, startup, ours_wall, how, theirs, torch_wall,
                                     torch1_wall, cores)
    print(f"\nload_avg_end={os.getloadavg()[0]:.2f}")
    if "small" in ratios:
        print(f"eval_speedup_vs_torch_small={ratios['small']:.2f}")
    if "paper" in ratios:
        print(f"eval_speedup_vs_torch={ratios['paper']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
