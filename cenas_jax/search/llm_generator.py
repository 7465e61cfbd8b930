"""The real generator p_theta: our NNX decoder with LoRA adapters, its sampler and its CE update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from cenas_jax.config import LLMConfig
from cenas_jax.search.generator import Generation, PromptLike, UpdateResult, fingerprint_file


class LLMGenerator:
    """Samples programs from the LLM and fits its LoRA adapters to elites (the CE update)."""

    def __init__(self, cfg: LLMConfig, *, seed: int = 0, progress: bool = False) -> None:
        from flax import nnx

        from cenas_jax.llm.lora import apply_lora
        from cenas_jax.llm.sampler import Sampler
        from cenas_jax.llm.weights import load_model, resolve_model_path

        self.cfg = cfg
        self.progress = progress
        path = resolve_model_path(cfg.model.name)
        self.model, self.tokenizer, self.config = load_model(cfg.model.name, cfg.model.dtype)
        apply_lora(self.model, cfg.lora, nnx.Rngs(seed))
        self.sampler = Sampler(self.model, self.tokenizer)
        self.use_chat = bool(cfg.model.chat_template and getattr(self.tokenizer, "chat_template", None))
        weights = path if path.is_file() else next(iter(sorted(path.glob("*.safetensors"))), path / "config.json")
        self.fingerprint = f"{path.name}:{fingerprint_file(weights)}"

    # -- prompts as text ---------------------------------------------------

    def render(self, prompt: PromptLike) -> str:
        """The exact text the model is conditioned on (chat template with a generation prompt, or plain)."""
        if self.use_chat:
            messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return prompt.render_plain()

    # -- Generator protocol --------------------------------------------------

    def generate(self, prompts: Sequence[PromptLike], temperatures: Sequence[float], seed: int) -> list[Generation]:
        s = self.cfg.sampling
        out: list[Generation] = []
        texts = [self.render(p) for p in prompts]
        for start in range(0, len(texts), s.batch_size):
            chunk = texts[start:start + s.batch_size]
            temps = list(temperatures[start:start + s.batch_size])
            comps = self.sampler.generate(chunk, chat=False, max_new_tokens=s.max_new_tokens, temperature=temps,
                                          top_k=s.top_k, top_p=s.top_p, seed=seed + start)
            out += [Generation(text=c.text, num_tokens=c.num_tokens, finish_reason=c.finish_reason) for c in comps]
        return out

    def encode_pair(self, prompt: PromptLike, completion: str) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids + EOS): what the CE update trains on."""
        p_ids = self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]
        c_ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return [int(i) for i in p_ids], [int(i) for i in c_ids] + [int(eos)]

    def update(self, examples: Sequence[tuple[PromptLike, str]], seed: int) -> UpdateResult:
        import dataclasses

        from cenas_jax.llm.finetune import finetune

        pairs = [self.encode_pair(p, c) for p, c in examples]
        cfg = dataclasses.replace(self.cfg.finetune, seed=seed)
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
        from cenas_jax.errors import UserError
        from cenas_jax.llm.checkpoint import read_metadata, restore_checkpoint

        meta = read_metadata(Path(directory) / "adapters").get("metadata", {})
        if meta.get("fingerprint") != self.fingerprint:
            raise UserError(f"{directory}: adapters were trained on model {meta.get('fingerprint')}, "
                            f"this run's model is {self.fingerprint}")
        restore_checkpoint(Path(directory) / "adapters", self.model)
