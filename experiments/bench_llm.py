"""LLM benchmark (``make bench-llm``): our JAX sampler and LoRA fine-tuning against transformers' PyTorch.

Both sides load the same SmolLM2-135M-Instruct GGUF file (dequantised to float32).

- Machine limits first: memory copy bandwidth and fp32 GEMM rate, and what one token per forward
  allows at batch 16 (every forward reads all the weights).
- Generation, batch 16: the search's own prompts (the quickstart corpus as full and delta prompts,
  chat template, answer prefix), the quickstart's sampling settings (temperature, top-k, top-p,
  token limits), rows ending at end-of-sequence on both sides; generated tokens per second of wall
  time. The sampled batches draw their rows' parents as a quickstart cycle does (from its 3 elites,
  so rows share prompts); the greedy delta batch has 16 different prompts and checks that ours and
  theirs give the same tokens. Ours with a search's defaults (speculative decoding by prompt lookup
  where on, shared prompts and prefix prefilled once, the weight matrices in ``sampling.weights_dtype``:
  bfloat16 products summed in float32 on a CPU with bfloat16 dot instructions) and with speculation and
  sharing off ("plain", same weights). transformers runs in float32, so on such a CPU the greedy batch's
  "same greedy rows" counts how often bfloat16 rounding leaves a whole row unchanged.
- Generation, batch 1, greedy: ours against transformers' own prompt-lookup decoding.
- LoRA fine-tuning tokens/s (forward, backward, AdamW) and the frozen-layer cache.

Wall times exclude compilation / warm-up. Take figures on an idle machine (load average < 1; it is
printed at start and end). The last lines are read by scripts:
``generate_b1_speedup_vs_transformers_prompt_lookup=``, ``generate_speedup_vs_transformers=`` (the sampled
batches, tokens/s ours over theirs; goal >= 2.0), ``finetune_speedup_vs_torch=`` (goal >= 1.5).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.machine import machine_limits  # noqa: E402 - after the path set-up above

MODEL = "smollm2-135m"
PROMPTS = [
    "Write a Python function that adds two numbers.",
    "Explain what a convolutional neural network is in two sentences.",
    "Write a function that returns the n-th Fibonacci number.",
    "List three uses of batch normalisation.",
    "What is the capital of France?",
    "Write a Flax module with two dense layers and a ReLU between them.",
    "Sort a list of integers in Python without using sorted().",
    "Give me a haiku about gradient descent.",
    "How does dropout regularise a network?",
    "Write a Python class for a stack with push and pop.",
    "What does the learning rate control in SGD?",
    "Write a function that checks whether a string is a palindrome.",
    "Summarise the idea of residual connections.",
    "Write a list comprehension that squares the even numbers of a list.",
    "Why do transformers use layer normalisation?",
    "Write a Python generator that yields prime numbers.",
]

# One shared load per process: (our model, tokenizer, config), transformers model.
_CACHE: dict[str, object] = {}


def _ours():
    if "ours" not in _CACHE:
        from cenas_jax import hostmem
        from cenas_jax.llm.weights import load_model

        hostmem.keep_freed_memory()  # as the `cenas` command does at start
        _CACHE["ours"] = load_model(MODEL, dtype="float32")
    return _CACHE["ours"]


def _theirs():
    if "theirs" not in _CACHE:
        import torch
        from transformers import AutoModelForCausalLM

        from cenas_jax.llm.weights import resolve_model_path

        path = resolve_model_path(MODEL)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        _CACHE["theirs"] = model.eval()
    return _CACHE["theirs"]


QUICKSTART = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def search_prompts(kind: str, n: int, tok, parents: int | None = None) -> list[str]:
    """``n`` prompts of the search itself: the quickstart's corpus programs as full or delta prompts, rendered
    exactly as the LLM generator conditions the model (chat template and answer prefix).

    ``parents=None``: every corpus program in turn (cycled; a repeated program comes with another score), so
    the rows' prompts differ. ``parents=m``: as a search cycle asks, each row's parent drawn (balanced, as
    ``draw_parents`` does) from ``m`` elites — every ``12 // m``-th corpus program — so rows of one parent
    share their prompt (the quickstart: elites are the top ``elite_rho`` = 0.25 of 12, i.e. 3 parents)."""
    import numpy as np

    from cenas_jax.candidates.corpus import load_corpus
    from cenas_jax.config import load_config
    from cenas_jax.search.elites import draw_parents
    from cenas_jax.search.llm_generator import render_prompt
    from cenas_jax.search.prompts import delta_prompt, full_prompt

    cfg = load_config(QUICKSTART)
    corpus = {e.name: e for e in load_corpus()}
    names = list(cfg.search.corpus)
    make = full_prompt if kind == "full" else delta_prompt
    if parents is None:
        picks = [(names[i % len(names)], 0.95 - 0.05 * (i // len(names))) for i in range(n)]
    else:
        elites = [(name, 0.95 - 0.01 * j) for j, name in enumerate(names[::max(1, len(names) // parents)][:parents])]
        picks = draw_parents(elites, n, np.random.default_rng(0))
    return [render_prompt(tok, make(corpus[name].source, score, cfg.data.name, input_shape=(8, 8, 1), num_classes=10),
                          chat=True) for name, score in picks]


def _search_parents() -> int:
    """How many elites a quickstart cycle draws its parents from: ``elite_rho`` of its candidates."""
    import math

    from cenas_jax.config import load_config

    cfg = load_config(QUICKSTART)
    return max(1, math.ceil(cfg.search.elite_rho * cfg.search.candidates_per_cycle))


def _quickstart_sampling():
    from cenas_jax.config import load_config

    return load_config(QUICKSTART).llm.sampling


def _hf_new_tokens(out_row: list[int], eos: set[int]) -> int:
    """Tokens transformers generated for a row: up to and including its first EOS (the rest is padding)."""
    return next((k + 1 for k, t in enumerate(out_row) if t in eos), len(out_row))


def bench_generate() -> list[dict]:
    """Batch 16, the search's own full and delta prompts, the quickstart's sampling settings, both sides ending
    a row at end-of-sequence: generated tokens per second of wall time, ours vs transformers ``generate``.
    Ours runs with the defaults a search uses (``SamplingConfig``: speculative decoding, shared-prefix
    prefill) and, for reference, with both off. Greedy on the delta batch checks that both give the same tokens.
    """
    import torch

    from cenas_jax.config import SamplingConfig
    from cenas_jax.llm.sampler import Sampler, resolve_weights_dtype

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, _ = _ours()
    hf = _theirs()
    qs, defaults = _quickstart_sampling(), SamplingConfig()
    wd = resolve_weights_dtype(defaults.weights_dtype, model.dtype)
    print(f"  our sampler's weight matrices: {wd or 'the model' + chr(39) + 's own float32'}"
          f" (sampling.weights_dtype: {defaults.weights_dtype})", flush=True)
    ours = Sampler(model, tok, speculative_k=defaults.speculative_k, lookup_ngram=defaults.lookup_ngram,
                   weights_dtype=wd)
    plain = Sampler(model, tok, speculative_k=0, share_prefix=False, weights_dtype=wd)
    eos = set(ours.eos_token_ids)
    rows = []
    # Sampled batches as a search cycle draws them (rows share parents); the greedy batch's rows all differ.
    m = _search_parents()
    for kind, temperature, parents in (("delta", qs.temperature, m), ("full", qs.temperature, m), ("delta", 0.0, None)):
        limit = qs.max_new_tokens_delta if kind == "delta" else qs.max_new_tokens
        prompts = search_prompts(kind, 16, tok, parents)
        kw = dict(chat=False, max_new_tokens=limit, temperature=temperature, top_k=qs.top_k, top_p=qs.top_p,
                  seed=list(range(16)))
        res = {}
        for name, sampler in (("ours", ours), ("ours_plain", plain)):
            sampler.generate(prompts, **kw)  # compile
            t0 = time.perf_counter()
            comps = sampler.generate(prompts, **kw)
            res[name] = (time.perf_counter() - t0, sum(c.num_tokens for c in comps), comps)
            st = sampler.last_speculation if sampler is ours else None
            print(f"  {name:<10} {kind:<5} T={temperature}: {res[name][1]} tokens in {res[name][0]:.2f} s"
                  + (f"  acceptance {st.acceptance_rate:.2f}, {st.tokens_per_forward:.2f} tokens/forward"
                     if st else ""), flush=True)
        ids = ours.encode(prompts, chat=False)
        width = max(len(i) for i in ids)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
        attn = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        hkw = dict(max_new_tokens=limit, pad_token_id=pad, eos_token_id=sorted(eos))
        hkw |= dict(do_sample=True, temperature=temperature, top_k=qs.top_k, top_p=qs.top_p) if temperature else \
            dict(do_sample=False)
        with torch.inference_mode():
            torch.manual_seed(0)
            hf.generate(input_ids=input_ids[:2], attention_mask=attn[:2], **{**hkw, "max_new_tokens": 4})
            t0 = time.perf_counter()
            out = hf.generate(input_ids=input_ids, attention_mask=attn, **hkw)
            theirs_s = time.perf_counter() - t0
        theirs_new = [_hf_new_tokens(r, eos) for r in out[:, width:].tolist()]
        same = ""
        if temperature == 0:
            same = f"{sum(list(c.token_ids) == r[:c.num_tokens] for c, r in zip(res['ours'][2], out[:, width:].tolist()))}/16"
        print(f"  torch      {kind:<5} T={temperature}: {sum(theirs_new)} tokens in {theirs_s:.2f} s"
              + (f"  same greedy rows {same}" if same else ""), flush=True)
        st = ours.last_speculation
        rows.append(dict(section="generate", kind=kind, temperature=temperature, batch=16, parents=parents or 16,
                         ours_s=res["ours"][0], ours_tokens=res["ours"][1],
                         plain_s=res["ours_plain"][0], plain_tokens=res["ours_plain"][1],
                         theirs_s=theirs_s, theirs_tokens=sum(theirs_new), same_rows=same,
                         acceptance=st.acceptance_rate if st else None,
                         tokens_per_forward=st.tokens_per_forward if st else None))
    return rows


def bench_generate_b1() -> list[dict]:
    """Batch 1, greedy, one delta and one full prompt of the search: ours (speculative decoding on) against
    transformers' own prompt-lookup decoding (``prompt_lookup_num_tokens``), and against plain ``generate``."""
    import torch

    from cenas_jax.config import SamplingConfig
    from cenas_jax.llm.sampler import Sampler, resolve_weights_dtype

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, _ = _ours()
    hf = _theirs()
    qs = _quickstart_sampling()
    ours = Sampler(model, tok, speculative_k=SamplingConfig().speculative_k,
                   weights_dtype=resolve_weights_dtype(SamplingConfig().weights_dtype, model.dtype))
    k = max(ours.speculative_k_for(1), 1)  # what a search's batch of one drafts (sampling.speculative_k)
    eos = set(ours.eos_token_ids)
    rows = []
    for kind in ("delta", "full"):
        limit = qs.max_new_tokens_delta if kind == "delta" else qs.max_new_tokens
        prompt = search_prompts(kind, 1, tok)
        kw = dict(chat=False, max_new_tokens=limit, temperature=0.0)
        ours.generate(prompt, **kw)
        t0 = time.perf_counter()
        comp = ours.generate(prompt, **kw)[0]
        ours_s = time.perf_counter() - t0
        ids = torch.tensor(ours.encode(prompt, chat=False))
        hkw = dict(max_new_tokens=limit, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
        times, outs = {}, {}
        with torch.inference_mode():
            for name, extra in (("lookup", dict(prompt_lookup_num_tokens=k)), ("plain", {})):
                hf.generate(input_ids=ids, **{**hkw, "max_new_tokens": 4}, **extra)
                t0 = time.perf_counter()
                outs[name] = hf.generate(input_ids=ids, **hkw, **extra)[0, ids.shape[1]:].tolist()
                times[name] = time.perf_counter() - t0
        n = comp.num_tokens
        same = list(comp.token_ids) == outs["lookup"][:n] == outs["plain"][:n]
        print(f"  batch 1 {kind}: ours {n} tokens in {ours_s:.2f} s; torch prompt lookup "
              f"{_hf_new_tokens(outs['lookup'], eos)} in {times['lookup']:.2f} s, plain {times['plain']:.2f} s; "
              f"same tokens: {same}", flush=True)
        rows.append(dict(section="generate_b1", kind=kind, batch=1, ours_s=ours_s, ours_tokens=n,
                         theirs_lookup_s=times["lookup"], theirs_lookup_tokens=_hf_new_tokens(outs["lookup"], eos),
                         theirs_plain_s=times["plain"], same=same))
    return rows


FT_BATCH, FT_LEN, FT_PROMPT, FT_STEPS = 4, 256, 64, 3  # 4 sequences x 256 tokens, 64 of them prompt
FT_RANK, FT_ALPHA = 32, 32.0
FT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _finetune_pairs(tok) -> list[tuple[list[int], list[int]]]:
    """FT_BATCH (prompt, completion) pairs of exactly FT_LEN tokens, completion ending with EOS."""
    text = " ".join(PROMPTS) * 8
    ids = tok.encode(text, add_special_tokens=False)
    eos = tok.eos_token_id
    pairs = []
    for r in range(FT_BATCH):
        chunk = ids[r * 37 : r * 37 + FT_LEN - 1]
        pairs.append((chunk[:FT_PROMPT], chunk[FT_PROMPT:] + [eos]))
    return pairs


def _torch_lora_finetune(hf, pairs, steps: int) -> tuple[float, float, int]:
    """(seconds for ``steps`` steps, first-step loss, tokens): PyTorch side of ``bench_finetune``.

    A hand-made LoRA (y = base(x) + alpha/r * x A B, B = 0 at start) on the same projections of
    every layer, base frozen; the same sequence-level loss; AdamW + clipping at 1.0.
    """
    import torch

    class LoRALinear(torch.nn.Module):
        def __init__(self, base, r, alpha):
            super().__init__()
            self.base, self.scale = base, alpha / r
            self.a = torch.nn.Parameter(torch.empty(base.in_features, r))
            torch.nn.init.kaiming_uniform_(self.a.T, a=5 ** 0.5)
            self.b = torch.nn.Parameter(torch.zeros(r, base.out_features))

        def forward(self, x):
            return self.base(x) + self.scale * ((x @ self.a) @ self.b)

    originals = []
    for p in hf.parameters():
        p.requires_grad_(False)
    for layer in hf.model.layers:
        for name in FT_TARGETS:
            parent = layer.self_attn if name in FT_TARGETS[:4] else layer.mlp
            originals.append((parent, name, getattr(parent, name)))
            setattr(parent, name, LoRALinear(getattr(parent, name), FT_RANK, FT_ALPHA))
    params = [p for p in hf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    seqs = [p + c for p, c in pairs]
    width = max(len(s) for s in seqs) - 1
    tokens = torch.zeros((len(seqs), width), dtype=torch.long)
    targets = torch.zeros_like(tokens)
    mask = torch.zeros((len(seqs), width))
    for r, ((p, _), s) in enumerate(zip(pairs, seqs)):
        tokens[r, : len(s) - 1] = torch.tensor(s[:-1])
        targets[r, : len(s) - 1] = torch.tensor(s[1:])
        mask[r, len(p) - 1 : len(s) - 1] = 1.0
    hf.train()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = hf(input_ids=tokens).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss = (nll * mask).sum(-1).mean()  # sequence-level NLL, mean over programs
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    try:
        loss0 = step()  # warm-up (allocator, thread pool)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - t0
    finally:
        for parent, name, base in originals:
            setattr(parent, name, base)
        hf.eval()
    return seconds, loss0, steps * sum(len(s) - 1 for s in seqs)


def bench_finetune() -> list[dict]:
    """LoRA fine-tuning tokens/s (forward + backward + AdamW), ours vs a PyTorch LoRA, same weights and loss.

    Ours: ``finetune`` on an ``apply_lora``'d copy (rank 32, alpha 32, all 7 projections of
    every layer), one warm-up call (compilation) then one timed call of FT_STEPS steps (the
    same shapes: no recompilation). Theirs: transformers' model with a hand-made LoRA on the
    same projections (see ``_torch_lora_finetune``). Tokens are real (non-padding) inputs.
    """
    import torch
    from flax import nnx

    from cenas_jax.config import FinetuneConfig, LoRAConfig
    from cenas_jax.llm.finetune import finetune
    from cenas_jax.llm.lora import apply_lora

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, _ = _ours()
    pairs = _finetune_pairs(tok)
    adapted = apply_lora(nnx.clone(model), LoRAConfig(rank=FT_RANK, alpha=FT_ALPHA, targets=FT_TARGETS), nnx.Rngs(0))
    cfg = FinetuneConfig(learning_rate=1e-4, batch_size=FT_BATCH, warmup_steps=1, max_seq_len=FT_LEN, max_steps=1)
    warm = finetune(adapted, pairs, cfg)
    timed = finetune(adapted, pairs, FinetuneConfig(**{**cfg.__dict__, "max_steps": FT_STEPS}))
    theirs_s, their_loss0, their_tokens = _torch_lora_finetune(_theirs(), pairs, FT_STEPS)
    assert timed.tokens == their_tokens, (timed.tokens, their_tokens)
    ours_tps, theirs_tps = timed.tokens / timed.seconds, their_tokens / theirs_s
    return [dict(section="finetune", batch=FT_BATCH, seq_len=FT_LEN, steps=FT_STEPS, tokens=timed.tokens,
                 ours_s=timed.seconds, theirs_s=theirs_s, ours_tok_s=ours_tps, theirs_tok_s=theirs_tps,
                 speedup=ours_tps / theirs_tps, ours_warmup_s=warm.seconds,
                 ours_loss0=warm.losses[0], theirs_loss0=their_loss0,
                 reference="torch: transformers model + hand-made LoRA r32 on q/k/v/o/gate/up/down, AdamW")]


def bench_frozen_cache() -> list[dict]:
    """The frozen-layer cache of ``finetune``: adapters on the last 8 of 30 layers, 3 passes over the pairs.

    The same ``finetune`` call with ``cache_frozen=False`` (every pass runs all 30 layers) and
    ``True`` (layers 0-21 run once per pair); both warmed up (compiled) first, the cache's
    timing includes computing the cached activations. Losses must agree.
    """
    from flax import nnx

    from cenas_jax.config import FinetuneConfig, LoRAConfig
    from cenas_jax.llm.finetune import finetune
    from cenas_jax.llm.lora import apply_lora

    model, tok, _ = _ours()
    pairs = _finetune_pairs(tok)
    lora = LoRAConfig(rank=16, alpha=32, layers=tuple(range(-8, 0)))
    cfg = FinetuneConfig(learning_rate=1e-4, batch_size=FT_BATCH, grad_accum=FT_BATCH, warmup_steps=1,
                         max_seq_len=FT_LEN, epochs=3)
    out = {}
    for cached in (False, True):
        adapted = apply_lora(nnx.clone(model), lora, nnx.Rngs(0))
        finetune(nnx.clone(adapted), pairs, FinetuneConfig(**{**cfg.__dict__, "max_steps": 2}), cache_frozen=cached)
        out[cached] = finetune(adapted, pairs, cfg, cache_frozen=cached)
    plain, cached = out[False], out[True]
    assert cached.cached_layers == 22 and plain.cached_layers == 0
    assert abs(cached.losses[-1] - plain.losses[-1]) <= 1e-3 * abs(plain.losses[-1]), (cached.losses, plain.losses)
    return [dict(section="frozen_cache", batch=FT_BATCH, seq_len=FT_LEN, steps=plain.steps, tokens=plain.tokens,
                 plain_s=plain.seconds, cached_s=cached.seconds, speedup=plain.seconds / cached.seconds,
                 reference="the same finetune call without the cache (all layers every pass)")]


# Sections run in order; each returns rows with at least "section".
SECTIONS = [bench_generate, bench_generate_b1, bench_finetune, bench_frozen_cache]


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else float("nan")


def main() -> int:
    import jax
    import jax.numpy as jnp

    from cenas_jax.config import SamplingConfig

    load0 = os.getloadavg()[0]
    d = SamplingConfig()
    print(f"cpus={os.cpu_count()} load_avg={load0:.2f} jax_backend={jax.default_backend()} model={MODEL} "
          f"speculative_k={d.speculative_k} lookup_ngram={d.lookup_ngram} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')}", flush=True)
    limits = machine_limits()
    model, _, _ = _ours()
    from flax import nnx

    from cenas_jax.llm.sampler import resolve_weights_dtype

    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    # What our sampler streams a forward: its copy of the matrices in sampling.weights_dtype, the rest as is.
    wd = resolve_weights_dtype(d.weights_dtype, model.dtype)
    ours_bytes = weight_bytes if wd is None else sum(
        x.size * (jnp.dtype(wd).itemsize if any(getattr(k, "key", None) in ("kernel", "embedding") for k in p[-2:])
                  else x.dtype.itemsize)
        for p, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)))
    bound16 = 16 * limits["copy_gb_s"] * 1e9 / ours_bytes
    print(f"machine: copy {limits['copy_gb_s']:.1f} GB/s, fp32 GEMM {limits['gemm_gflop_s']:.0f} GFLOP/s; weights "
          f"{weight_bytes / 1e6:.0f} MB -> one token per forward caps batch 16 at "
          f"{16 * limits['copy_gb_s'] * 1e9 / weight_bytes:.0f} tok/s"
          + (f"; our sampler's {wd} copy {ours_bytes / 1e6:.0f} MB -> {bound16:.0f} tok/s" if wd else ""),
          flush=True)
    rows: list[dict] = []
    for section in SECTIONS:
        print(f"{section.__name__} ...", flush=True)
        rows += section()
    gen = [r for r in rows if r["section"] == "generate"]
    print(f"{'prompts':>7} {'T':>4} {'parents':>7} {'ours tok/s':>10} {'plain tok/s':>11} {'torch tok/s':>11} {'speed-up':>8} "
          f"{'of bound':>8} {'accept':>6} {'tok/fwd':>7} {'same greedy':>11}")
    for r in gen:
        ours, theirs = _rate(r["ours_tokens"], r["ours_s"]), _rate(r["theirs_tokens"], r["theirs_s"])
        acc = f"{r['acceptance']:.2f}" if r["acceptance"] is not None else "-"
        tpf = f"{r['tokens_per_forward']:.2f}" if r["tokens_per_forward"] is not None else "-"
        print(f"{r['kind']:>7} {r['temperature']:>4} {r['parents']:>7} {ours:>10.1f} {_rate(r['plain_tokens'], r['plain_s']):>11.1f} "
              f"{theirs:>11.1f} {ours / theirs:>8.2f} {ours / bound16:>8.0%} {acc:>6} {tpf:>7} {r['same_rows'] or '-':>11}")
    for r in rows:
        if r["section"] not in ("generate",):
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    # The headline: the sampled delta and full batches together (the quickstart's settings).
    sampled = [r for r in gen if r["temperature"] > 0]
    ours = _rate(sum(r["ours_tokens"] for r in sampled), sum(r["ours_s"] for r in sampled))
    theirs = _rate(sum(r["theirs_tokens"] for r in sampled), sum(r["theirs_s"] for r in sampled))
    b1 = [r for r in rows if r["section"] == "generate_b1"]
    b1_ratio = _rate(sum(r["ours_tokens"] for r in b1), sum(r["ours_s"] for r in b1)) / _rate(
        sum(r["theirs_lookup_tokens"] for r in b1), sum(r["theirs_lookup_s"] for r in b1))
    ft = next(r for r in rows if r["section"] == "finetune")
    print(f"load_avg_start={load0:.2f} load_avg_end={os.getloadavg()[0]:.2f}")
    print(f"generate_b1_speedup_vs_transformers_prompt_lookup={b1_ratio:.2f}")
    print(f"generate_speedup_vs_transformers={ours / theirs:.2f}")
    print(f"finetune_speedup_vs_torch={ft['speedup']:.2f}")
    return 0


if __name__ == "__main__":
    from cenas_jax import hostmem

    # As the `cenas` command does: malloc asks for huge pages (both sides of every ratio run in this process).
    hostmem.restart_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(main())
