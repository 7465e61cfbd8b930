"""Every accelerator path in one script (``make check-accelerator``): PASS / FAIL / SKIP with figures.

Written for one GPU within about 8 minutes; it runs on a CPU host too (slowly, with ``--quick``), where
the accelerator-only parts say SKIP. Checks, in this order:

1. ``proxy-step``: the paper's proxy regime (one epoch of a CIFAR-10-sized set, 781 steps of 64, 3 seeds,
   vmapped where the platform vmaps) for the six benchmark architectures, against PyTorch eager on the
   same device: wall per architecture and time per step. PASS when every architecture trains.
2. ``vmapped-seeds``: 8 seeds in one vmapped program against the same 8 one after another: per-seed
   accuracies within 1 point, final losses within 1%; and the time of 8 vmapped seeds against 1 seed.
3. ``sandbox-shared-device``: two sandbox workers on one device (``sandbox.workers_per_device: 2`` on a GPU)
   evaluate the six architectures; PASS when all succeed and the workers' JAX reports the accelerator.
4. ``bf16-sampler``: greedy decoding of the benchmark prompts in bfloat16 against float32. PASS when each
   row's tokens are the same, or the first difference comes where float32's top two logits are within
   ``--tie-logits`` (default 0.5) of each other: a near-tie that bfloat16's rounding may flip.
5. ``sharded-lora``: a LoRA CE update of SmolLM2 with its parameters sharded over every local device
   against the same update unsharded: losses within 1e-4 relative (on one device the mesh is 1x1).

The last line is ``check_accelerator=<PASS|FAIL> passed=<n> failed=<n> skipped=<n>``; ``--out DIR``
also writes ``check.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
import types
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

ARCHS = ("resnet", "vgg_bn", "cnn_dropout", "mobilenet", "lenet", "mlp")
RESULTS: list[dict] = []


def log(msg: str) -> None:
    print(msg, flush=True)


def check(name: str):
    """Run a check function; record PASS/FAIL/SKIP, its figures and its time; never raise."""

    def wrap(fn):
        def run(args) -> None:
            if time.monotonic() > args.deadline:
                RESULTS.append({"check": name, "status": "SKIP", "why": "out of time", "figures": {}})
                log(f"SKIP {name}: out of time")
                return
            log(f"--- {name}")
            t0 = time.perf_counter()
            try:
                status, figures, why = fn(args)
            except Exception as e:  # a broken path is a FAIL with its cause, and the other checks still run
                status, figures, why = "FAIL", {}, f"{type(e).__name__}: {e}"
                log(traceback.format_exc()[-3000:])
            figures["seconds"] = round(time.perf_counter() - t0, 1)
            RESULTS.append({"check": name, "status": status, "why": why, "figures": figures})
            shown = ", ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (list, dict)))
            log(f"{status} {name}: {why} [{shown}]")

        return run

    return wrap


# ----------------------------------------------------------------------------- helpers


def _arch(name: str, num_classes: int):
    source = (HERE / "bench" / "flax_archs" / f"{name}.py").read_text()
    module = types.ModuleType(f"check_arch_{name}")
    sys.modules[module.__name__] = module  # linen looks the defining module up
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module.Net(num_classes=num_classes)


def _train_cfg(seeds: int, seed_strategy: str = "auto", epochs: float = 1.0):
    from cenas_jax.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=64, optimizer="sgd", learning_rate=0.01, momentum=0.9,
                       seeds=seeds, seed_strategy=seed_strategy)


def _torch_device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _torch_train(name: str, ds, seeds: int, device) -> float:
    """Seconds for ``seeds`` PyTorch eager trainings of ``name`` (one epoch, SGD 0.01 m0.9, batch 64)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from bench.torch_archs import TORCH_ARCHS, init_like_flax

    x = (ds.x_train.astype(np.float32) - ds.mean) / ds.std
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(ds.y_train.astype(np.int64)).to(device)
    h, _, c = ds.input_shape
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = init_like_flax(TORCH_ARCHS[name](c, h, ds.num_classes)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        perm = torch.randperm(len(y), device=device)
        model.train()
        for i in range(len(y) // 64):
            idx = perm[i * 64:(i + 1) * 64]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    sync()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- checks


@check("proxy-step")
def proxy_step(args):
    import jax
    from bench.cifar_shaped import cifar_shaped

    from cenas_jax.train import train_candidate

    ds = cifar_shaped(data_dir=args.data_dir, n_train=args.train_images)
    steps = len(ds.y_train) // 64
    device = _torch_device()
    _torch_train("lenet", cifar_shaped(n_train=640) if not args.data_dir else ds, 1, device)  # untimed warm-up
    rows, ours_total, torch_total = [], 0.0, 0.0
    for name in args.archs:
        r = train_candidate(_arch(name, ds.num_classes), True, ds, _train_cfg(args.seeds), jax.random.key(0))
        theirs = _torch_train(name, ds, args.seeds, device)
        ours = r.compile_s + r.train_s
        ours_total += ours
        torch_total += theirs
        rows.append({"arch": name, "strategy": r.strategy, "accuracy": round(r.accuracy, 4),
                     "compile_s": round(r.compile_s, 2), "train_s": round(r.train_s, 2),
                     "ours_step_ms": round(1000 * r.train_s / (steps * args.seeds), 3),
                     "torch_s": round(theirs, 2), "torch_step_ms": round(1000 * theirs / (steps * args.seeds), 3)})
        log(f"  {name}: ours {r.compile_s:.1f} s compile + {r.train_s:.1f} s train ({r.strategy}, "
            f"acc {r.accuracy:.3f}); torch eager {theirs:.1f} s on {device}")
    figs = {"dataset": ds.name, "steps_per_epoch": steps, "seeds": args.seeds, "ours_s": round(ours_total, 1),
            "torch_s": round(torch_total, 1), "speedup_vs_torch": round(torch_total / ours_total, 2),
            "per_arch": rows}
    return "PASS", figs, f"{len(rows)} architectures trained; speed-up vs torch eager {torch_total / ours_total:.2f}x"


@check("vmapped-seeds")
def vmapped_seeds(args):
    import jax
    import numpy as np

    from cenas_jax.config import DataConfig
    from cenas_jax.data import load_dataset
    from cenas_jax.train import train_candidate

    ds = load_dataset(DataConfig(name="mnist5k"))
    n = 8
    net = _arch("vgg_bn", ds.num_classes)
    runs = {}
    for strategy in ("vmap", "sequential"):
        runs[strategy] = train_candidate(net, True, ds, _train_cfg(n, strategy), jax.random.key(3))
    one = train_candidate(net, True, ds, _train_cfg(1), jax.random.key(3))
    vm, seq = runs["vmap"], runs["sequential"]
    diff = np.abs(np.asarray(vm.seed_accuracies) - np.asarray(seq.seed_accuracies))
    loss_rel = abs(vm.loss - seq.loss) / max(abs(seq.loss), 1e-9)
    figs = {"max_acc_diff": round(float(diff.max()), 4), "loss_rel_diff": round(loss_rel, 5),
            "vmap8_train_s": round(vm.train_s, 2), "seq8_train_s": round(seq.train_s, 2),
            "one_seed_train_s": round(one.train_s, 2), "vmap8_over_one": round(vm.train_s / one.train_s, 2),
            "vmap8_compile_s": round(vm.compile_s, 2)}
    ok = diff.max() <= 0.01 and loss_rel <= 0.01
    why = (f"8 vmapped seeds take {vm.train_s / one.train_s:.2f}x one seed's time "
           f"(sequential: {seq.train_s / one.train_s:.2f}x)")
    if jax.default_backend() == "cpu":
        why += " (on CPU the rule picks sequential seeds)"
    return ("PASS" if ok else "FAIL"), figs, why if ok else f"vmap and sequential disagree: {figs}"


@check("sandbox-shared-device")
def sandbox_shared(args):
    from cenas_jax.candidates import placement
    from cenas_jax.candidates.evaluator import Evaluator
    from cenas_jax.candidates.records import Candidate
    from cenas_jax.config import DataConfig, SandboxConfig

    inv = placement.detect_inventory()
    cfg = SandboxConfig(workers_per_device=2) if inv.platform != "cpu" else SandboxConfig(workers=2)
    sources = {a: (HERE / "bench" / "flax_archs" / f"{a}.py").read_text() for a in args.archs}
    seen = _GpuProcesses() if inv.platform == "gpu" else None
    t0 = time.perf_counter()
    with Evaluator(DataConfig(name="mnist5k"), _train_cfg(1), cfg) as ev:
        probe = ev.probe_isolation()
        ev.start(wait=True)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        records = ev.evaluate([Candidate(a, s) for a, s in sources.items()])
        wall = time.perf_counter() - t1
        pool = ev.pool_size
        envs = [dict(p.env) for p in ev.placements]
    procs = seen.stop() if seen else None
    bad = [f"{r.candidate_id}: {r.error_kind} {r.error_message}" for r in records if r.status != "ok"]
    figs = {"pool": pool, "platform": inv.platform, "worker_backend": probe.get("backend"),
            "worker_devices": probe.get("devices"), "isolation": probe.get("mode"),
            "startup_s": round(startup, 1), "wall_s": round(wall, 1), "gpu_processes_max": procs,
            "placements": envs,
            "per_arch": [{"arch": r.candidate_id, "status": r.status, "accuracy": r.accuracy,
                          "compile_s": r.compile_s, "train_s": r.train_s} for r in records]}
    if bad:
        return "FAIL", figs, "; ".join(bad)[:1000]
    if inv.platform != "cpu" and probe.get("backend") in (None, "", "cpu"):
        return "FAIL", figs, f"the workers' JAX runs on {probe.get('backend')!r}, not the accelerator"
    return "PASS", figs, f"{len(records)} candidates on {pool} workers sharing {inv.describe()}, in {wall:.1f} s"


class _GpuProcesses:
    """Polls nvidia-smi for the most processes holding the GPU at once (best effort)."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _poll(self) -> None:
        exe = shutil.which("nvidia-smi")
        while exe and not self._stop.wait(0.5):
            try:
                out = subprocess.run([exe, "--query-compute-apps=pid", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                return
            self.most = max(self.most, len([ln for ln in out.splitlines() if ln.strip()]))

    def stop(self) -> int:
        self._stop.set()
        self._t.join(timeout=6)
        return self.most


def _load(dtype: str):
    from cenas_jax.llm.weights import load_model

    return load_model(args_model(), dtype=dtype)


def args_model() -> str:
    return os.environ.get("CENAS_CHECK_MODEL", "smollm2-135m")


@check("bf16-sampler")
def bf16_sampler(args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench_llm import PROMPTS

    from cenas_jax.llm.sampler import Sampler

    m32, tok, _ = _load("float32")
    m16, _, _ = _load("bfloat16")
    prompts = PROMPTS[: args.batch]
    figs, outs = {}, {}
    for label, model in (("fp32", m32), ("bf16", m16)):
        s = Sampler(model, tok)
        s.generate(prompts, chat=True, max_new_tokens=args.new_tokens, ignore_eos=True)  # compile
        t0 = time.perf_counter()
        outs[label] = s.generate(prompts, chat=True, max_new_tokens=args.new_tokens, ignore_eos=True)
        dt = time.perf_counter() - t0
        figs[f"{label}_tok_s"] = round(len(prompts) * args.new_tokens / dt, 1)
    sampler = Sampler(m32, tok)
    ids = sampler.encode(prompts, chat=True)
    eos = set(sampler.eos_token_ids)
    same, ties, bad, gaps = 0, 0, [], []
    diverged = []
    for i, (a, b) in enumerate(zip(outs["fp32"], outs["bf16"])):
        cut = next((k for k, t in enumerate(a.token_ids) if t in eos), len(a.token_ids))
        k = next((j for j in range(cut) if a.token_ids[j] != b.token_ids[j]), None)
        if k is None:
            same += 1
        else:
            diverged.append((i, k))
    if diverged:
        rows = [ids[i] + list(outs["fp32"][i].token_ids[:k]) for i, k in diverged]
        width = max(len(r) for r in rows)
        toks = np.zeros((len(rows), width), np.int32)
        for j, r in enumerate(rows):
            toks[j, : len(r)] = r  # right padding: invisible to earlier positions under the causal mask
        logits = np.asarray(jax.jit(lambda t: m32(t))(jnp.asarray(toks)))
        for j, ((i, k), r) in enumerate(zip(diverged, rows)):
            top2 = np.sort(logits[j, len(r) - 1])[-2:]
            gap = float(top2[1] - top2[0])
            gaps.append(round(gap, 3))
            if gap <= args.tie_logits:
                ties += 1
            else:
                bad.append(f"row {i} at token {k}: fp32 top-2 gap {gap:.3f}")
    # The prefill logits of each prompt in both dtypes: how far bfloat16 moves them.
    width = max(len(r) for r in ids)
    toks = np.zeros((len(ids), width), np.int32)
    for j, r in enumerate(ids):
        toks[j, : len(r)] = r
    l32 = np.asarray(jax.jit(lambda t: m32(t))(jnp.asarray(toks)))
    l16 = np.asarray(jax.jit(lambda t: m16(t))(jnp.asarray(toks)))
    last = np.array([len(r) - 1 for r in ids])
    d = np.abs(l32[np.arange(len(ids)), last] - l16[np.arange(len(ids)), last])
    figs.update({"rows": len(prompts), "identical_rows": same, "near_tie_rows": ties, "divergence_gaps": gaps,
                 "prefill_logit_max_abs_diff": round(float(d.max()), 4),
                 "prefill_logit_mean_abs_diff": round(float(d.mean()), 4),
                 "bf16_over_fp32_speed": round(figs["bf16_tok_s"] / figs["fp32_tok_s"], 2)})
    if bad:
        return "FAIL", figs, "; ".join(bad)
    return "PASS", figs, (f"{same}/{len(prompts)} rows token-identical, {ties} differ first at a near-tie "
                          f"(fp32 top-2 gap <= {args.tie_logits})")


@check("sharded-lora")
def sharded_lora(args):
    import jax
    import numpy as np
    from bench_llm import _finetune_pairs
    from flax import nnx

    from cenas_jax.config import FinetuneConfig, LoRAConfig
    from cenas_jax.llm.finetune import finetune
    from cenas_jax.llm.lora import apply_lora
    from cenas_jax.llm.sharding import make_mesh, shard_model

    devices = jax.local_devices()
    runs = []
    for sharded in (False, True):
        model, tok, _ = _load("float32")
        apply_lora(model, LoRAConfig(rank=16, alpha=32.0, layers=tuple(range(-8, 0))), nnx.Rngs(1))
        if sharded:
            shard_model(model, make_mesh(devices=devices))
        pairs = _finetune_pairs(tok)
        ft = FinetuneConfig(learning_rate=3e-4, max_steps=args.lora_steps, batch_size=len(pairs), warmup_steps=1)
        finetune(model, pairs, dataclasses.replace(ft, max_steps=1))  # compile (and a first step)
        r = finetune(model, pairs, ft)
        runs.append((np.asarray(r.losses), r.tokens_per_s))
    (l0, t0), (l1, t1) = runs
    rel = float(np.max(np.abs(l1 - l0) / np.maximum(np.abs(l0), 1e-9)))
    figs = {"devices": len(devices), "losses_unsharded": [round(float(x), 5) for x in l0],
            "losses_sharded": [round(float(x), 5) for x in l1], "max_rel_diff": rel,
            "unsharded_tok_s": round(t0, 1), "sharded_tok_s": round(t1, 1)}
    ok = rel <= 1e-4
    return ("PASS" if ok else "FAIL"), figs, f"sharded over {len(devices)} device(s): losses within {rel:.1e}"


CHECKS = {"proxy-step": proxy_step, "vmapped-seeds": vmapped_seeds, "sandbox-shared-device": sandbox_shared,
          "bf16-sampler": bf16_sampler, "sharded-lora": sharded_lora}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", nargs="*", choices=list(CHECKS), help="run only these checks")
    p.add_argument("--budget-s", type=float, default=480, help="skip the checks not started by then (default 480)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (5,000 training images, 2 architectures, 16 tokens) for a CPU smoke run")
    p.add_argument("--data-dir", default=None, help="a directory holding cifar-10-batches-py (else mnist5k-shaped)")
    p.add_argument("--tie-logits", type=float, default=0.5)
    p.add_argument("--out", default=None, help="also write check.json here")
    args = p.parse_args()
    args.deadline = time.monotonic() + args.budget_s
    args.train_images = 5_000 if args.quick else 50_000
    args.archs = ("lenet", "mlp") if args.quick else ARCHS
    args.seeds = 3
    args.batch, args.new_tokens = (4, 16) if args.quick else (16, 64)
    args.lora_steps = 2 if args.quick else 4
    import jax

    env = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        env["torch"] = None
    log(f"environment: {json.dumps(env)}")
    for name in args.only or list(CHECKS):
        CHECKS[name](args)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "check.json").write_text(json.dumps({"environment": env, "checks": RESULTS}, indent=1))
    log("")
    for r in RESULTS:
        log(f"{r['status']:<4}  {r['check']:<22} {r['why']}")
    n = {s: sum(r["status"] == s for r in RESULTS) for s in ("PASS", "FAIL", "SKIP")}
    verdict = "FAIL" if n["FAIL"] else "PASS"
    log(f"check_accelerator={verdict} passed={n['PASS']} failed={n['FAIL']} skipped={n['SKIP']}")
    return 1 if n["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
