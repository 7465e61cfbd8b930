"""LLM benchmark (``make bench-llm``): our JAX sampler against transformers' PyTorch ``generate``.

Both sides load the same SmolLM2-135M-Instruct GGUF file (dequantised to
float32) and decode greedily exactly ``NEW_TOKENS`` new tokens per row with
end-of-sequence ignored (ours: ``ignore_eos``; transformers: ``min_new_tokens``),
at batch 1 and batch 16, chat prompts of different lengths, left-padded.
Wall times exclude compilation / warm-up, which is reported separately.

Sections are functions returning table rows; the generation section is here,
LoRA fine-tuning tokens/s is a second section function (``bench_finetune``)
added to ``SECTIONS``. The last printed line is always
``generate_speedup_vs_transformers=<their wall / ours at batch 16>``.

Expected on a 2-core CPU: transformers ~14 tok/s at batch 1 and ~137 tok/s at
batch 16 (unloaded machine); the goal is a speed-up >= 2.0 at batch 16.
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

NEW_TOKENS = 128
BATCHES = (1, 16)
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
        from cenas_jax.llm.weights import load_model

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


def bench_generate() -> list[dict]:
    """Greedy decoding of NEW_TOKENS tokens per row, ours vs transformers, at each batch size."""
    import torch

    from cenas_jax.llm.sampler import Sampler

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, _ = _ours()
    hf = _theirs()
    sampler = Sampler(model, tok)
    rows = []
    for b in BATCHES:
        prompts = PROMPTS[:b]
        t0 = time.perf_counter()
        sampler.generate(prompts, chat=True, max_new_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        warm = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        ours = sampler.generate(prompts, chat=True, max_new_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"  ours  batch {b}: {ours_s:.2f} s wall, {ours_cpu:.2f} s cpu (warm-up {warm:.1f} s)", flush=True)
        assert all(c.num_tokens == NEW_TOKENS for c in ours), "every row must decode exactly NEW_TOKENS tokens"

        ids = sampler.encode(prompts, chat=True)
        width = max(len(i) for i in ids)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
        attn = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        kw = dict(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=pad)
        with torch.inference_mode():
            t0 = time.perf_counter()
            hf.generate(input_ids=input_ids, attention_mask=attn, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
            their_warm = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            out = hf.generate(input_ids=input_ids, attention_mask=attn, **kw)
            theirs_s, theirs_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"  torch batch {b}: {theirs_s:.2f} s wall, {theirs_cpu:.2f} s cpu", flush=True)
        theirs_new = out[:, width:].tolist()
        assert all(len(r) == NEW_TOKENS for r in theirs_new)
        # Same greedy tokens up to our first EOS: there transformers' min_new_tokens masks EOS out
        # and picks the runner-up, while we keep the EOS and decode on (ignore_eos).
        eos = set(sampler.eos_token_ids)
        same = 0
        for c, r in zip(ours, theirs_new):
            cut = next((k for k, t in enumerate(c.token_ids) if t in eos), NEW_TOKENS)
            same += list(c.token_ids[:cut]) == r[:cut]
        rows.append(dict(section="generate", batch=b, tokens=b * NEW_TOKENS, ours_s=ours_s, theirs_s=theirs_s,
                         ours_cpu_s=ours_cpu, theirs_cpu_s=theirs_cpu,
                         ours_warmup_s=warm, theirs_warmup_s=their_warm, same_rows=f"{same}/{b}"))
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


# Sections run in order; each returns rows with at least "section" and "batch".
SECTIONS = [bench_generate, bench_finetune, bench_frozen_cache]


def main() -> int:
    import jax

    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.1f} jax_backend={jax.default_backend()} "
          f"model={MODEL} new_tokens={NEW_TOKENS}", flush=True)
    rows: list[dict] = []
    for section in SECTIONS:
        print(f"{section.__name__} ...", flush=True)
        rows += section()
    gen = [r for r in rows if r["section"] == "generate"]
    # Wall time is the measure; CPU seconds (all threads) are shown because a shared machine
    # stretches wall time by however much CPU the other processes take at that moment.
    print(f"{'batch':>5} {'ours s':>8} {'ours tok/s':>10} {'hf s':>8} {'hf tok/s':>9} {'speedup':>8} "
          f"{'ours cpu s':>10} {'hf cpu s':>9} {'cpu ratio':>9} {'ours warm-up s':>14} {'same greedy rows':>16}")
    for r in gen:
        print(f"{r['batch']:>5} {r['ours_s']:>8.2f} {r['tokens'] / r['ours_s']:>10.1f} {r['theirs_s']:>8.2f} "
              f"{r['tokens'] / r['theirs_s']:>9.1f} {r['theirs_s'] / r['ours_s']:>8.2f} "
              f"{r['ours_cpu_s']:>10.2f} {r['theirs_cpu_s']:>9.2f} {r['theirs_cpu_s'] / r['ours_cpu_s']:>9.2f} "
              f"{r['ours_warmup_s']:>14.1f} {r['same_rows']:>16}")
    for r in rows:
        if r["section"] != "generate":
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print(f"load_avg_end={os.getloadavg()[0]:.1f}")
    b16 = next(r for r in gen if r["batch"] == 16)
    print(f"generate_speedup_vs_transformers={b16['theirs_s'] / b16['ours_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
