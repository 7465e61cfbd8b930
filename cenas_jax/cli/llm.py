"""``cenas llm``: sample completions from the LLM, or dump its next-token logits for a prompt."""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "llm",
        help="the generator LLM: generate completions, dump logits",
        description="Run the Llama-family LLM (embedded smollm2-135m, a Hugging Face directory or a .gguf file).",
    )
    sub = p.add_subparsers(dest="llm_command", metavar="LLM_COMMAND")

    g = sub.add_parser(
        "generate", help="print completions of a prompt",
        description="Print completions of one prompt (repeated --batch times, sampled in one batch). The prompt is "
                    "an instruction put through the model's chat template; --no-chat continues raw text instead "
                    "(the 135M model continues raw code poorly: 'def relu(x):' gives 'return x * 2').",
        epilog='example (about 20 s on a 2-core CPU: 13 s to load the model, 6 s to compile and sample):\n'
               '  cenas llm generate --prompt "Write a Python function relu(x) that returns max(x, 0)."',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(g)
    g.add_argument("--batch", type=int, default=1, help="number of completions, decoded as one batch (default 1)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per completion at most (default 128)")
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 is greedy (default 0.7)")
    g.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens; 0: off (default 50)")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus mass kept, in (0, 1] (default 0.9)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding (same as --temperature 0)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--no-chat", action="store_true", help="use the prompt as raw text, without the chat template")
    g.add_argument("--weights-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="dtype of the sampler's copy of the weight matrices (products sum in float32); auto: "
                        "bfloat16 for a float32 model on a device that multiplies bfloat16 natively (default auto)")
    g.set_defaults(func=run_generate)

    lg = sub.add_parser("logits", help="write the final-position logits of a prompt to a .npy file",
                        description="Write the next-token logits (float32, shape (vocab,)) after the prompt as "
                                    "given (no chat template) to a .npy file.")
    _model_args(lg)
    lg.add_argument("--out", required=True, help="output .npy file")
    lg.set_defaults(func=run_logits)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (embedded), a Hugging Face model directory, or a .gguf file")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="parameter / compute dtype (auto: float32 on CPU, bfloat16 on accelerators)")


def run_generate(args) -> int:
    from cenas_jax.llm.sampler import Sampler, resolve_weights_dtype
    from cenas_jax.llm.weights import load_model

    _check_generate_args(args)
    t_load = time.perf_counter()
    model, tok, _ = load_model(args.model, dtype=args.dtype)
    print(f"model loaded in {time.perf_counter() - t_load:.1f} s", file=sys.stderr)
    sampler = Sampler(model, tok, weights_dtype=resolve_weights_dtype(args.weights_dtype, model.dtype))
    t0 = time.perf_counter()
    outs = sampler.generate([args.prompt] * args.batch, chat=not args.no_chat, max_new_tokens=args.max_new_tokens,
                            temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k,
                            top_p=args.top_p, stop=tuple(args.stop), seed=args.seed)
    wall = time.perf_counter() - t0
    for i, c in enumerate(outs):
        print(f"--- completion {i} ({c.num_tokens} tokens, finish: {c.finish_reason})")
        print(c.text)
    total = sum(c.num_tokens for c in outs)
    print(f"{total} tokens in {wall:.1f} s including compilation ({total / wall:.1f} tokens/s)", file=sys.stderr)
    return 0


def _check_generate_args(args) -> None:
    """Every argument that needs no model is checked before the model loads (seconds)."""
    import math

    from cenas_jax.errors import UserError
    from cenas_jax.llm.weights import resolve_model_path

    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature must be finite and >= 0, got {args.temperature}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0 (0: off), got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    resolve_model_path(args.model)


def run_logits(args) -> int:
    import jax.numpy as jnp
    import numpy as np

    from cenas_jax.errors import UserError
    from cenas_jax.llm.tokenizer import encode_prompt
    from cenas_jax.llm.weights import load_model

    model, tok, _ = load_model(args.model, dtype=args.dtype)
    ids = encode_prompt(tok, args.prompt, chat=False)
    if not ids:
        raise UserError("the prompt encodes to zero tokens")
    logits = np.asarray(model(jnp.asarray([ids]))[0, -1], dtype=np.float32)
    try:
        np.save(args.out, logits)
    except OSError as e:
        raise UserError(f"cannot write {args.out}: {e}") from None
    top = int(logits.argmax())
    print(f"wrote {args.out}: logits float32 shape {logits.shape} after {len(ids)} prompt tokens; "
          f"argmax {top} ({tok.decode([top])!r})")
    return 0
