"""The real generator p_theta: our NNX decoder with LoRA adapters, its sampler and its CE update.

The ``llm`` modules (JAX, Flax, optax, orbax) are imported by the methods that use them: ``cenas run``
imports this module for every run, and a run with the mutation generator never needs them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cenas_jax.config import LLMConfig
from cenas_jax.errors import UserError
from cenas_jax.progress import progress_bar
from cenas_jax.search.generator import Generation, OnBatch, PromptLike, UpdateResult, fingerprint_file
from cenas_jax.search.prompts import answer_frame

if TYPE_CHECKING:
    from cenas_jax.llm.sampler import SpeculationStats


class LLMGenerator:
    """Samples programs from the LLM and fits its LoRA adapters to elites (the CE update)."""

    def __init__(self, cfg: LLMConfig, *, seed: int = 0, progress: bool = False) -> None:
        from flax import nnx

        from cenas_jax.llm.lora import apply_lora
        from cenas_jax.llm.sampler import Sampler, resolve_weights_dtype
        from cenas_jax.llm.weights import load_model

        self.cfg = cfg
        self.progress = progress
        self.model, self.tokenizer, self.config = load_model(cfg.model.name, cfg.model.dtype)
        apply_lora(self.model, cfg.lora, nnx.Rngs(seed))
        self.sampler = Sampler(self.model, self.tokenizer, speculative_k=cfg.sampling.speculative_k,
                               lookup_ngram=cfg.sampling.lookup_ngram,
                               weights_dtype=resolve_weights_dtype(cfg.sampling.weights_dtype, self.model.dtype))
        # (answer kind, statistics) of every sampled batch when speculative decoding is on (benchmarks read it)
        self.speculation: list[tuple[str, SpeculationStats]] = []
        self.use_chat = bool(cfg.model.chat_template and getattr(self.tokenizer, "chat_template", None))
        self.fingerprint = model_fingerprint(cfg.model.name)

    # -- prompts as text ---------------------------------------------------

    def render(self, prompt: PromptLike) -> str:
        """The exact text the model is conditioned on (``render_prompt``)."""
        return render_prompt(self.tokenizer, prompt, chat=self.use_chat)

    # -- Generator protocol --------------------------------------------------

    def batches(self, prompts: Sequence[PromptLike]) -> list[list[int]]:
        """How a ``generate`` call over ``prompts`` is cut into batches: by answer kind (full / delta, in
        order of first appearance), then ``sampling.batch_size`` prompts at a time. A function of the
        prompts' kinds and the config only."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(_frame(p), []).append(i)
        n = self.cfg.sampling.batch_size
        return [idx[k:k + n] for idx in groups.values() for k in range(0, len(idx), n)]

    def generate(self, prompts: Sequence[PromptLike], temperatures: Sequence[float], seeds: Sequence[int], *,
                 skip: Collection[int] = (), on_batch: OnBatch | None = None) -> list[Generation | None]:
        """Sample one answer per prompt, in batches of one answer kind (full / delta) each.

        Each kind has its token limit (``max_new_tokens`` / ``max_new_tokens_delta``) and its
        terminator (the closing fence, the end of the edit block), so a batch of short edits
        does not wait for long programs. The returned text is the whole answer: the prefix
        the model was given, what it wrote, and the terminator when it reached it.
        Row i draws its tokens from ``seeds[i]`` alone (``Sampler.generate``), and the batches are
        ``batches(prompts)`` whatever ``skip`` holds, so a resumed call samples the same programs.
        """
        s = self.cfg.sampling
        if len(seeds) != len(prompts) or len(temperatures) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts need as many temperatures and seeds, "
                             f"got {len(temperatures)} and {len(seeds)}")
        out: list[Generation | None] = [None] * len(prompts)
        plan = [b for b in self.batches(prompts) if any(i not in skip for i in b)]
        bar = _SamplingProgress(sum(len(b) for b in plan)) if self.progress else None
        try:
            for chunk in plan:
                prefix, term = _frame(prompts[chunk[0]])
                is_delta = getattr(prompts[chunk[0]], "mode", "full") == "delta"
                limit = s.max_new_tokens_delta if (is_delta and s.max_new_tokens_delta is not None) else s.max_new_tokens
                comps = self.sampler.generate(
                    [self.render(prompts[i]) for i in chunk], chat=False, max_new_tokens=limit,
                    temperature=[temperatures[i] for i in chunk], top_k=s.top_k, top_p=s.top_p,
                    stop=(term,) if term else (), seed=[int(seeds[i]) & 0xFFFFFFFF for i in chunk],
                    max_repeat_lines=s.max_repeat_lines,
                    on_progress=bar.batch("delta" if is_delta else "full", limit) if bar else None)
                if bar:
                    bar.batch_done(len(chunk), sum(c.num_tokens for c in comps))
                if self.sampler.last_speculation is not None:
                    self.speculation.append(("delta" if is_delta else "full", self.sampler.last_speculation))
                new = []
                for i, c in zip(chunk, comps):
                    if i in skip:
                        continue
                    text = prefix + c.text + (term if c.finish_reason == "stop" else "")
                    out[i] = Generation(text=text, num_tokens=c.num_tokens, finish_reason=c.finish_reason)
                    new.append(i)
                if on_batch is not None:
                    on_batch(new, [out[i] for i in new])  # type: ignore[misc]
        finally:
            if bar:
                bar.close()
        return out

    def encode_pair(self, prompt: PromptLike, completion: str) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids + EOS): what the CE update trains on.

        The answer prefix belongs to the prompt side (the sampler is given it), so it is cut
        from the completion, which must start with it.
        """
        prefix = _frame(prompt)[0]
        if prefix and not completion.startswith(prefix):
            raise ValueError(f"a training completion must start with the answer prefix {prefix!r}: {completion[:60]!r}")
        p_ids = self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]
        c_ids = self.tokenizer(completion[len(prefix):], add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return [int(i) for i in p_ids], [int(i) for i in c_ids] + [int(eos)]

    def count_tokens(self, prompt: PromptLike, completion: str) -> int:
        """Tokens the CE update trains on for one pair (``encode_pair``: prompt, completion and EOS), what the
        loop's token budget counts (``search/update.within_budget``)."""
        p_ids, c_ids = self.encode_pair(prompt, completion)
        return len(p_ids) + len(c_ids)

    def update(self, examples: Sequence[tuple[PromptLike, str]], seed: int,
               epochs: float | None = None, learning_rate: float | None = None) -> UpdateResult:
        """The CE update on (prompt, completion) pairs: ``finetune`` from a fresh optimiser.

        ``epochs``: passes over the pairs (default ``finetune.epochs``); repeated passes reuse
        the frozen layers' activations (``llm/finetune.py``). ``learning_rate``: the peak rate
        (default ``finetune.learning_rate``).
        """
        from cenas_jax.llm.finetune import finetune

        pairs = [self.encode_pair(p, c) for p, c in examples]
        overrides = {"epochs": epochs, "learning_rate": learning_rate}
        cfg = dataclasses.replace(self.cfg.finetune, seed=seed,
                                  **{k: float(v) for k, v in overrides.items() if v is not None})
        t0 = time.perf_counter()
        res = finetune(self.model, pairs, cfg, progress=self.progress)  # a fresh optimiser: the CE update resets it
        self._optimizer = res.optimizer
        return UpdateResult(losses=tuple(float(x) for x in res.losses), steps=res.steps, tokens=res.tokens,
                            seconds=time.perf_counter() - t0)

    def save(self, directory: Path) -> None:
        from cenas_jax.llm.checkpoint import save_checkpoint

        save_checkpoint(Path(directory) / "adapters", self.model, getattr(self, "_optimizer", None),
                        metadata={"fingerprint": self.fingerprint}, overwrite=True)

    def restore(self, directory: Path) -> None:
        from cenas_jax.llm.checkpoint import read_metadata, restore_checkpoint

        meta = read_metadata(Path(directory) / "adapters").get("metadata", {})
        if meta.get("fingerprint") != self.fingerprint:
            raise UserError(f"{directory}: adapters were trained on model {meta.get('fingerprint')}, "
                            f"this run's model is {self.fingerprint}")
        restore_checkpoint(Path(directory) / "adapters", self.model)


def model_fingerprint(name: str) -> str:
    """``<file or directory name>:<hash of the weights>``: what adapters and warm starts are tied to (the weights
    are hashed, not loaded)."""
    from cenas_jax.llm.weights import resolve_model_path

    path = resolve_model_path(name)
    weights = path if path.is_file() else next(iter(sorted(path.glob("*.safetensors"))), path / "config.json")
    return f"{path.name}:{fingerprint_file(weights)}"


def render_prompt(tokenizer, prompt: PromptLike, *, chat: bool) -> str:
    """The exact text the model is conditioned on: chat template with a generation prompt (or
    plain), then the answer's fixed prefix (``Prompt.answer_prefix``, e.g. ```` ```python ````)."""
    if chat:
        messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = prompt.render_plain()
    return text + _frame(prompt)[0]


def answer_terminator(prompt: PromptLike) -> str:
    """The text that ends an answer to ``prompt`` (the closing fence, the end of the edit block), or ""."""
    return _frame(prompt)[1]


def _frame(prompt: PromptLike) -> tuple[str, str]:
    """(answer prefix, terminator) of a prompt; prompts without a mode (plain test prompts) have none."""
    mode = getattr(prompt, "mode", None)
    if mode not in ("full", "delta"):
        return "", ""
    return answer_frame(mode, getattr(prompt, "edit_format", None))


class _SamplingProgress:
    """Rows done, tokens and rows per second while a cycle samples (a bar on a terminal, plain lines elsewhere)."""

    def __init__(self, total_rows: int) -> None:
        self.bar = progress_bar(total=total_rows, desc="sampling", unit="row")
        self.rows_before = 0
        self.tokens_before = 0

    def batch(self, kind: str, limit: int):
        def on_progress(rows_done: int, step: int, tokens: int) -> None:
            self.bar.n = self.rows_before + rows_done  # the bar shows rows done and rows per second itself
            self.bar.set_postfix_str(f"{kind} batch step {step}/{limit}, {self.tokens_before + tokens:,} tokens")
        return on_progress

    def batch_done(self, rows: int, tokens: int) -> None:
        self.rows_before += rows
        self.tokens_before += tokens
        self.bar.n = self.rows_before

    def close(self) -> None:
        self.bar.close()
